"""Drop-in ``torch.nn`` modules: ``RNN``, ``LSTM``, ``GRU``, and ``convert``.

Each class derives from ``torch.nn.RNNBase``, so the constructor's validation, parameter
names, shapes, initialisation, ``state_dict`` keys, ``extra_repr`` and pickling are torch's
own. They deliberately do *not* derive from ``nn.LSTM`` and friends: ``torch.compile`` refuses
to trace any instance of those (``allow_rnn``), and fusedrnn modules must compile with
``fullgraph=True``. The additions are the keyword ``backend`` (see ``fusedrnn.BACKENDS``) and
the variants of issue 14: ``zoneout=`` (LSTM, GRU), ``forward(..., resets=)`` (every module) and
the LayerNorm cells ``LayerNormLSTM``/``LayerNormGRU`` (:mod:`fusedrnn.layernorm_modules`).
"""

import torch
from torch import nn

from . import functional, validation
from .backends.cell import registry as cell_registry
from .backends import registry as backend_registry
from .cells import GRUCell, LSTMCell, RNNCell
from .layer_config import LayerConfig


class _FusedRNNBase(nn.RNNBase):
    zoneout = 0.0          # a class default: RNN has no zoneout, and old pickles lack the field
    layer_norm = False

    def _set_backend(self, backend):
        backend_registry.check_name(backend)
        self.backend = backend

    def _set_zoneout(self, zoneout):
        validation.check_zoneout(zoneout)
        self.zoneout = float(zoneout)

    def _flat_weights_now(self):
        # Read the attributes afresh: torch.func.functional_call and `module.weight = ...`
        # replace them without touching the cached list.
        return [getattr(self, name) for name in self._flat_weights_names]

    def forward(self, input, hx=None, resets=None):
        """torch's ``forward(input, hx)``, plus ``resets``: None, or a bool tensor ``[T, B]``
        (``[B, T]`` with ``batch_first``; ``[T]`` for unbatched input). Where ``resets[t, b]``
        is true, the state entering step t of row b is that row's initial state again (h0/c0,
        or zeros); the reverse direction crosses the same boundary between t and t − 1 of its
        own order, so each episode runs as if alone, in both directions, and no gradient
        flows across a reset. With a ``PackedSequence``, T is the longest length and B is in
        the caller's order."""
        return functional.forward(
            self.mode, input, hx, self._flat_weights_now(), num_layers=self.num_layers,
            bias=self.bias, batch_first=self.batch_first, dropout=self.dropout,
            training=self.training, bidirectional=self.bidirectional, proj_size=self.proj_size,
            backend=self.backend, layer_norm=self.layer_norm, zoneout=self.zoneout,
            resets=resets,
        )

    def resolved_backend(self, device=None):
        """The backend this module's layers run on for input on ``device`` (default: the
        parameters' device), e.g. what ``"auto"`` picks."""
        weights = self._flat_weights_now()
        cfg = LayerConfig(self.mode, self.bidirectional, self.bias, self.proj_size > 0,
                          self.layer_norm, False, self.zoneout > 0)
        x = torch.empty(1, 1, self.input_size, device=device or weights[0].device,
                        dtype=weights[0].dtype)
        return backend_registry.resolve(self.backend, cfg, x, weights).name

    def extra_repr(self):
        s = super().extra_repr()
        if self.zoneout:
            s += f", zoneout={self.zoneout}"
        return s if self.backend == "auto" else f"{s}, backend={self.backend!r}"


class RNN(_FusedRNNBase):
    """Elman RNN, signature of ``torch.nn.RNN`` plus ``backend="auto"``.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None, backend='auto')``
    """

    def __init__(self, *args, backend="auto", **kwargs):
        # Same argument handling as torch.nn.RNN.__init__ (nonlinearity is the 4th positional).
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(
                f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        super().__init__(mode, *args, **kwargs)
        self._set_backend(backend)


class LSTM(_FusedRNNBase):
    """LSTM, signature of ``torch.nn.LSTM`` plus ``backend="auto"`` and ``zoneout=0.0``.

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device=None, dtype=None, backend='auto', zoneout=0.0)``

    ``zoneout=p`` (Krueger et al., 2016, on h only as haste defines it): while training each
    element of h keeps its previous value with probability p, one Bernoulli mask per step, row
    and unit drawn from torch's generator, ``h_t = m ⊙ h_in + (1 − m) ⊙ h'_t`` for both the
    carried state and the output; in eval mode the expectation ``p h_in + (1 − p) h'_t``.
    """

    def __init__(self, *args, backend="auto", zoneout=0.0, **kwargs):
        super().__init__("LSTM", *args, **kwargs)
        self._set_backend(backend)
        self._set_zoneout(zoneout)


class GRU(_FusedRNNBase):
    """GRU (reset gate after the recurrent matmul), signature of ``torch.nn.GRU`` plus
    ``backend="auto"`` and ``zoneout=0.0`` (as :class:`LSTM`'s).

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None, backend='auto', zoneout=0.0)``
    """

    def __init__(self, *args, backend="auto", zoneout=0.0, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)
        self._set_backend(backend)
        self._set_zoneout(zoneout)


_REPLACEMENTS = {nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN}


def _replacement(module, backend):
    cls = _REPLACEMENTS[type(module)]
    kwargs = dict(
        num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
        dropout=module.dropout, bidirectional=module.bidirectional, backend=backend,
    )
    if cls is LSTM:
        kwargs["proj_size"] = module.proj_size
    if cls is RNN:
        kwargs["nonlinearity"] = module.nonlinearity
    first = module._flat_weights[0]
    # Build on the meta device so no throw-away initialisation runs, then take the weights.
    with torch.device("meta"):
        new = cls(module.input_size, module.hidden_size, **kwargs, dtype=first.dtype)
    # The very same Parameter objects, so optimisers and tied weights keep working.
    for name in module._flat_weights_names:
        setattr(new, name, getattr(module, name))
    new._init_flat_weights()
    new.train(module.training)
    _copy_hooks(module, new)
    return new


def _copy_hooks(module, new):
    """What a user registered on the torch module carries over: every hook table (forward,
    pre-forward, backward, state_dict, load_state_dict, and the bookkeeping of hooks registered
    ``with_kwargs=True`` or ``always_call=True``: ``_forward_hooks_with_kwargs``,
    ``_forward_pre_hooks_with_kwargs``, ``_forward_hooks_always_called``) and every buffer."""
    for name, value in vars(module).items():
        if name.startswith("_") and "hooks" in name and isinstance(value, (dict, set)):
            setattr(new, name, value)
    for name, buf in module._buffers.items():
        new.register_buffer(name, buf, persistent=name not in module._non_persistent_buffers_set)


_CELL_REPLACEMENTS = {nn.LSTMCell: LSTMCell, nn.GRUCell: GRUCell, nn.RNNCell: RNNCell}


def _cell_replacement(module, backend):
    # Raises for backends without a single-step form (the persistent and CuPy ones).
    cell_registry.check_name(backend)
    cls = _CELL_REPLACEMENTS[type(module)]
    kwargs = {"nonlinearity": module.nonlinearity} if cls is RNNCell else {}
    with torch.device("meta"):
        new = cls(module.input_size, module.hidden_size, bias=module.bias, **kwargs,
                  dtype=module.weight_ih.dtype, backend=backend)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        setattr(new, name, getattr(module, name))   # the same Parameter objects (or None)
    new.train(module.training)
    _copy_hooks(module, new)
    return new


def _converted(module, backend):
    """``module``'s fusedrnn twin, or None when it is not a torch RNN module or cell."""
    if type(module) in _REPLACEMENTS:
        return _replacement(module, backend)
    if type(module) in _CELL_REPLACEMENTS:
        return _cell_replacement(module, backend)
    return None


def convert(model, backend="auto"):
    """Replace every ``nn.RNN``, ``nn.LSTM``, ``nn.GRU``, ``nn.RNNCell``, ``nn.LSTMCell`` and
    ``nn.GRUCell`` inside ``model`` (and ``model`` itself) by its fusedrnn twin, in place,
    keeping parameters (the same tensors), device, dtype and training mode. Returns the model.

    Subclasses of the torch modules are left alone: their overridden behaviour is theirs.
    A backend without a single-step form (``"triton-persistent"``, ``"cupy-*"``) raises
    ``ValueError`` when the model holds a cell.
    """
    backend_registry.check_name(backend)
    new = _converted(model, backend)
    if new is not None:
        return new
    for name, child in list(model.named_children()):
        new = _converted(child, backend)
        if new is not None:
            setattr(model, name, new)
        else:
            convert(child, backend)
    return model
