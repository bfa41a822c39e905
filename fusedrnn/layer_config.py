"""What a backend needs to know about one recurrent layer, and how its weights are laid out.

A layer's weights travel as a flat list in torch's ``_flat_weights`` order, direction by
direction: ``w_ih, w_hh, [b_ih, b_hh], [w_hr]`` (biases absent when ``bias=False``, ``w_hr``
only for an LSTM with ``proj_size > 0``).
"""

from dataclasses import dataclass

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


@dataclass(frozen=True)
class LayerConfig:
    mode: str            # one of MODES
    bidirectional: bool
    has_bias: bool
    has_proj: bool       # LSTM with proj_size > 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"Unrecognized RNN mode: {self.mode}")
        if self.has_proj and self.mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")

    @property
    def gates(self) -> int:
        return GATES[self.mode]

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def has_cell_state(self) -> bool:
        return self.mode == "LSTM"

    @property
    def weight_names(self) -> tuple:
        """Names of one direction's weights, in flat order."""
        names = ("w_ih", "w_hh")
        if self.has_bias:
            names += ("b_ih", "b_hh")
        if self.has_proj:
            names += ("w_hr",)
        return names

    def split_weights(self, flat):
        """Flat weight list of one layer -> one ``{name: tensor}`` dict per direction."""
        k = len(self.weight_names)
        if len(flat) != k * self.directions:
            raise ValueError(f"expected {k * self.directions} weight tensors for {self}, got {len(flat)}")
        return [dict(zip(self.weight_names, flat[d * k:(d + 1) * k])) for d in range(self.directions)]

    def hidden_sizes(self, flat):
        """``(H, Hr)``: cell width and width of the emitted hidden state (P with a projection)."""
        w_hh = flat[1]
        H = w_hh.shape[0] // self.gates
        return H, (flat[self.weight_names.index("w_hr")].shape[0] if self.has_proj else H)
