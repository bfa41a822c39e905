"""What a backend needs to know about one recurrent layer, and how its weights are laid out.

A layer's weights travel as a flat list in torch's ``_flat_weights`` order, direction by
direction: ``w_ih, w_hh, [b_ih, b_hh], [w_hr]`` (biases absent when ``bias=False``, ``w_hr``
only for an LSTM with ``proj_size > 0``). A LayerNorm cell appends its gains (and, for the
LSTM, the cell-state LayerNorm's bias) to each direction's list:
``w_ih, w_hh, [b_ih, b_hh], ln_ih [G*H], ln_hh [G*H], [ln_cell_w [H], ln_cell_b [H]]``.

The three *variant* options (issue 14) change what one step computes; a layer with any of them
goes through the variant op (:mod:`fusedrnn.ops.variant_layer`), never the classic kernels:

* ``layer_norm``: LayerNorm over the gate pre-activations (LSTM, GRU; see ``reference/``);
* ``has_resets``: some steps start from the initial state again (episode resets);
* ``has_zoneout``: a keep mask blends each new h with the state the step started from.
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
    layer_norm: bool = False
    has_resets: bool = False
    has_zoneout: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"Unrecognized RNN mode: {self.mode}")
        if self.has_proj and self.mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if self.layer_norm and self.mode not in ("LSTM", "GRU"):
            raise ValueError(f"layer_norm is defined for LSTM and GRU, not {self.mode}")
        if self.layer_norm and self.has_proj:
            raise ValueError("a LayerNorm LSTM has no projection (proj_size must be 0)")

    @property
    def is_variant(self) -> bool:
        """Whether a step differs from torch's cell (LayerNorm, resets or zoneout)."""
        return self.layer_norm or self.has_resets or self.has_zoneout

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
        if self.layer_norm:
            names += ("ln_ih", "ln_hh")
            if self.mode == "LSTM":
                names += ("ln_cell_w", "ln_cell_b")
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
