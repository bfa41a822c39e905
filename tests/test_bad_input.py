"""Bad input and bad constructor arguments: fusedrnn raises what torch.nn raises.

Every expected error is torch's own, captured at run time from the ``torch.nn`` twin fed the
same arguments; nothing here hard-codes a message. The one deliberate difference (an initial
state whose dtype differs from the input's) has its own test.
"""

import sys
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from same_error import assert_same_error, outcome

BACKENDS = ["reference", "torch"]
IN, H, P, L, B, T = 3, 5, 2, 2, 2, 4

CELLS = {  # name -> (torch class, fusedrnn class, extra constructor kwargs)
    "lstm": (nn.LSTM, fusedrnn.LSTM, {}),
    "lstm_proj": (nn.LSTM, fusedrnn.LSTM, {"proj_size": P}),
    "gru": (nn.GRU, fusedrnn.GRU, {}),
    "rnn_tanh": (nn.RNN, fusedrnn.RNN, {"nonlinearity": "tanh"}),
}


def is_lstm(cell):
    return cell.startswith("lstm")


def h_width(cell):
    return CELLS[cell][2].get("proj_size", 0) or H


def twins(cell, backend, dtype=torch.float64, **extra):
    torch_cls, fused_cls, kw = CELLS[cell]
    torch.manual_seed(0)
    ref = torch_cls(IN, H, num_layers=L, **kw, **extra).to(dtype)
    ours = fused_cls(IN, H, num_layers=L, backend=backend, **kw, **extra).to(dtype)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def randn(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype)


# --- bad forward input -------------------------------------------------------------------------

def _state(cell, shape_h, shape_c=None):
    """hx with h shaped ``shape_h`` (and c shaped ``shape_c`` for the LSTM)."""
    h = randn(*shape_h)
    return (h, randn(*shape_c)) if is_lstm(cell) else h


def _good_state(cell, batched=True):
    b = (B,) if batched else ()
    return _state(cell, (L,) + b + (h_width(cell),), (L,) + b + (H,))


def _bad_state(cell, which, batched, change):
    """A correct state for ``cell`` except that the ``which`` tensor ("h" or "c") has its shape
    transformed by ``change``."""
    b = (B,) if batched else ()
    shapes = {"h": (L,) + b + (h_width(cell),), "c": (L,) + b + (H,)}
    shapes[which] = change(shapes[which])
    return _state(cell, shapes["h"], shapes["c"])


def _packed(features):
    # Note: torch's nn.LSTM.forward (unlike GRU/RNN) runs no Python-level checks on a
    # PackedSequence, so for the LSTM the expected errors there are those of torch's kernels.
    return pack_padded_sequence(randn(T, B, features), torch.tensor([T, 2]), enforce_sorted=True)


INPUT_CASES = {
    # name -> (cell, which) -> (input, hx); the model is float64 unless the name says otherwise
    "input_rank1": lambda cell, which: (randn(IN), None),
    "input_rank4": lambda cell, which: (randn(T, B, IN, 1), None),
    "input_rank4_with_h0": lambda cell, which: (randn(T, B, IN, 1), _good_state(cell)),
    "features_batched": lambda cell, which: (randn(T, B, IN + 1), None),
    "features_batched_with_h0": lambda cell, which: (randn(T, B, IN + 1), _good_state(cell)),
    "features_unbatched": lambda cell, which: (randn(T, IN + 1), None),
    "features_packed": lambda cell, which: (_packed(IN + 1), None),
    "features_packed_with_h0": lambda cell, which: (_packed(IN + 1), _good_state(cell)),
    "state_batch_dim": lambda cell, which: (
        randn(T, B, IN), _bad_state(cell, which, True, lambda s: (s[0], s[1] + 1, s[2]))),
    "state_layer_dim": lambda cell, which: (
        randn(T, B, IN), _bad_state(cell, which, True, lambda s: (s[0] + 1, s[1], s[2]))),
    "state_hidden_dim": lambda cell, which: (
        randn(T, B, IN), _bad_state(cell, which, True, lambda s: (s[0], s[1], s[2] + 1))),
    "state_hidden_dim_unbatched": lambda cell, which: (
        randn(T, IN), _bad_state(cell, which, False, lambda s: (s[0], s[1] + 1))),
    "state_layer_dim_unbatched": lambda cell, which: (
        randn(T, IN), _bad_state(cell, which, False, lambda s: (s[0] + 1, s[1]))),
    "state_hidden_dim_packed": lambda cell, which: (
        _packed(IN), _bad_state(cell, which, True, lambda s: (s[0], s[1], s[2] + 1))),
    "state_2d_for_3d_input": lambda cell, which: (
        randn(T, B, IN), _bad_state(cell, which, True, lambda s: (s[0], s[2]))),
    "state_3d_for_2d_input": lambda cell, which: (
        randn(T, IN), _bad_state(cell, which, False, lambda s: (s[0], 1, s[1]))),
    "zero_length_batched": lambda cell, which: (randn(0, B, IN), None),
    "zero_length_batched_with_h0": lambda cell, which: (randn(0, B, IN), _good_state(cell)),
    "zero_length_unbatched": lambda cell, which: (randn(0, IN), None),
    "int64_input": lambda cell, which: (torch.randint(0, 3, (T, B, IN)), None),
    "float64_input_to_float32_model": lambda cell, which: (randn(T, B, IN), None),
    "float64_input_to_float32_model_unbatched": lambda cell, which: (randn(T, IN), None),
    "float64_packed_input_to_float32_model": lambda cell, which: (_packed(IN), None),
}
STATE_CASES = {name for name in INPUT_CASES if name.startswith("state_")}


def _is_packed_lstm(name, cell):
    return "packed" in name and is_lstm(cell)


def _input_params(packed_lstm):
    for name in INPUT_CASES:
        for cell in CELLS:
            if _is_packed_lstm(name, cell) != packed_lstm:
                continue
            whiches = ("h", "c") if name in STATE_CASES and is_lstm(cell) else ("h",)
            for which in whiches:
                yield pytest.param(name, cell, which, id=f"{name}-{cell}-{which}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, cell, which", list(_input_params(packed_lstm=False)))
def test_bad_input_raises_like_torch(case, cell, which, backend):
    dtype = torch.float32 if "float32_model" in case else torch.float64
    ref, ours = twins(cell, backend, dtype=dtype)
    torch.manual_seed(1)
    inp, hx = INPUT_CASES[case](cell, which)
    assert_same_error(lambda: ref(inp, hx), lambda: ours(inp, hx))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, cell, which", list(_input_params(packed_lstm=True)))
def test_packed_lstm_gets_torchs_own_python_checks(case, cell, which, backend):
    """Documented difference. torch's ``nn.LSTM.forward`` (unlike its GRU and RNN) skips
    ``check_forward_args`` for a PackedSequence, so its errors there come from its kernels and
    change with the device (e.g. "mat1 and mat2 shapes cannot be multiplied (6x4 and 3x20)" on
    CPU). fusedrnn runs torch's checks there too; the oracle is torch's own
    ``check_forward_args`` method called on the same arguments."""
    dtype = torch.float32 if "float32_model" in case else torch.float64
    ref, ours = twins(cell, backend, dtype=dtype)
    torch.manual_seed(1)
    inp, hx = INPUT_CASES[case](cell, which)
    data, batch_sizes, sorted_indices, _ = inp
    assert sorted_indices is None   # _packed sorts, so no permutation of hx is involved

    def torch_python_checks():
        state = hx if hx is not None else (
            torch.zeros(L, B, h_width(cell), dtype=data.dtype),
            torch.zeros(L, B, H, dtype=data.dtype))
        ref.check_forward_args(data, state, batch_sizes)

    assert outcome(lambda: ref(inp, hx))[0] is not None, "torch accepted the input"
    assert_same_error(torch_python_checks, lambda: ours(inp, hx))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "lstm_proj"])
@pytest.mark.parametrize("form", ["tensor_all_layers", "tensor_one_layer", "one_tuple",
                                  "tensor_unbatched"])
def test_lstm_hx_not_a_pair_raises_like_torch(form, cell, backend):
    ref, ours = twins(cell, backend)
    w = h_width(cell)
    inp = randn(T, IN) if form == "tensor_unbatched" else randn(T, B, IN)
    hx = {
        "tensor_all_layers": lambda: randn(L, B, w),     # hx[0] is 2-D: the rank check fires
        "tensor_one_layer": lambda: randn(1, B, w),      # hx[1] does not exist: IndexError
        "one_tuple": lambda: (randn(L, B, w),),          # tuple index out of range
        "tensor_unbatched": lambda: randn(1, w),
    }[form]()
    err_type, _ = assert_same_error(lambda: ref(inp, hx), lambda: ours(inp, hx))
    if form in ("tensor_one_layer", "one_tuple"):
        assert err_type is IndexError


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell, which", [(cell, which) for cell in CELLS
                                         for which in (("h", "c") if is_lstm(cell) else ("h",))])
def test_state_dtype_mismatch_is_the_documented_difference(cell, which, backend):
    """The ONE deliberate difference: an initial state whose dtype differs from the input's.

    For h0, torch raises RuntimeError from deep inside its kernels with a backend-dependent
    text; fusedrnn raises RuntimeError too, with one clear text naming the dtypes. (For an
    LSTM's c0 torch's CPU kernel even accepts the mismatch and casts silently, while cuDNN
    rejects it; fusedrnn rejects it everywhere, with the same clear text.)"""
    ref, ours = twins(cell, backend)
    inp = randn(T, B, IN)
    h = randn(L, B, h_width(cell), dtype=torch.float32 if which == "h" else torch.float64)
    hx = h
    if is_lstm(cell):
        hx = (h, randn(L, B, H, dtype=torch.float32 if which == "c" else torch.float64))
    if which == "h":
        ref_type, ref_msg = outcome(lambda: ref(inp, hx))
        assert ref_type is RuntimeError, f"torch: {ref_type} {ref_msg!r}"
    our_type, our_msg = outcome(lambda: ours(inp, hx))
    assert our_type is RuntimeError, f"fusedrnn raised {our_type}: {our_msg!r}"
    assert "dtype" in our_msg
    assert str(torch.float32) in our_msg and str(torch.float64) in our_msg


def _shapes(result):
    out, hidden = result
    hidden = hidden if isinstance(hidden, tuple) else (hidden,)
    return [tuple(out.shape)] + [tuple(h.shape) for h in hidden]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_empty_batch_works_like_torch(with_h0, batch_first, cell, backend):
    ref, ours = twins(cell, backend, batch_first=batch_first)
    inp = randn(0, T, IN) if batch_first else randn(T, 0, IN)
    hx = None
    if with_h0:
        hx = randn(L, 0, h_width(cell))
        if is_lstm(cell):
            hx = (hx, randn(L, 0, H))
    ref_result = ref(inp, hx)
    our_result = ours(inp, hx)
    assert _shapes(our_result) == _shapes(ref_result)
    assert our_result[0].dtype == ref_result[0].dtype == torch.float64


# --- constructor -------------------------------------------------------------------------------

CTOR_CASES = {  # name -> (classes it applies to, args, kwargs)
    "dropout_2": ("LSTM GRU RNN", (IN, H), {"dropout": 2}),
    "dropout_negative": ("LSTM GRU RNN", (IN, H), {"dropout": -0.1}),
    "dropout_bool": ("LSTM GRU RNN", (IN, H), {"dropout": True}),
    "bias_str": ("LSTM GRU RNN", (IN, H), {"bias": "yes"}),
    "batch_first_int": ("LSTM GRU RNN", (IN, H), {"batch_first": 1}),
    "input_size_0": ("LSTM GRU RNN", (0, H), {}),
    "input_size_float": ("LSTM GRU RNN", (2.5, H), {}),
    "hidden_size_0": ("LSTM GRU RNN", (IN, 0), {}),
    "hidden_size_str": ("LSTM GRU RNN", (IN, "4"), {}),
    "num_layers_0": ("LSTM GRU RNN", (IN, H), {"num_layers": 0}),
    "proj_size_negative": ("LSTM", (IN, H), {"proj_size": -1}),
    "proj_size_equal_hidden": ("LSTM", (IN, H), {"proj_size": H}),
    "proj_size_above_hidden": ("LSTM", (IN, H), {"proj_size": H + 1}),
    "proj_size_given": ("GRU RNN", (IN, H), {"proj_size": 2}),
    "proj_size_zero_given": ("GRU RNN", (IN, H), {"proj_size": 0}),
    "nonlinearity_keyword": ("RNN", (IN, H), {"nonlinearity": "sigmoid"}),
    "nonlinearity_positional": ("RNN", (IN, H, 1, "sigmoid"), {}),
    "nonlinearity_twice": ("RNN", (IN, H, 1, "tanh"), {"nonlinearity": "relu"}),
}


def _ctor_params():
    for name, (classes, args, kwargs) in CTOR_CASES.items():
        for cls in classes.split():
            yield pytest.param(cls, args, kwargs, id=f"{name}-{cls}")


@pytest.mark.parametrize("backend", [None, "reference", "torch"])
@pytest.mark.parametrize("cls, args, kwargs", list(_ctor_params()))
def test_constructor_errors_match_torch(cls, args, kwargs, backend):
    extra = {} if backend is None else {"backend": backend}
    assert_same_error(lambda: getattr(nn, cls)(*args, **kwargs),
                      lambda: getattr(fusedrnn, cls)(*args, **kwargs, **extra))


def _warning_texts(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [(w.category, str(w.message)) for w in caught]


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_dropout_single_layer_warning_matches_torch(cls):
    with pytest.warns(UserWarning) as record:
        getattr(fusedrnn, cls)(IN, H, dropout=0.5, num_layers=1)
    ours = [str(w.message) for w in record if w.category is UserWarning]
    ref = [text for cat, text in _warning_texts(lambda: getattr(nn, cls)(IN, H, dropout=0.5))
           if cat is UserWarning]
    assert ref, "torch did not warn"
    assert ours == ref
    # and no warning for a multi-layer stack, as in torch
    assert _warning_texts(lambda: getattr(fusedrnn, cls)(IN, H, dropout=0.5, num_layers=2)) == \
        _warning_texts(lambda: getattr(nn, cls)(IN, H, dropout=0.5, num_layers=2)) == []


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_unknown_backend_raises_value_error_naming_valid_ones(cls):
    with pytest.raises(ValueError) as info:
        getattr(fusedrnn, cls)(IN, H, backend="cuda-magic")
    msg = str(info.value)
    assert "cuda-magic" in msg
    for name in ("auto", "reference", "torch") + tuple(fusedrnn.BACKENDS):
        assert name in msg


@pytest.mark.parametrize("name", ["cupy-persistent", "cupy-step"])
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_cupy_backend_without_cupy_raises_import_error_naming_the_extra(cls, name, monkeypatch):
    """CuPy is optional: asking for a CuPy backend without it fails at construction with an
    ImportError that says what to install (and "auto" never needs it)."""
    monkeypatch.setitem(sys.modules, "cupy", None)          # absent, even where installed
    with pytest.raises(ImportError, match=rf"{name}.*fusedrnn\[cuda13\].*fusedrnn\[cuda12\]"):
        getattr(fusedrnn, cls)(IN, H, backend=name)
    with pytest.raises(ImportError, match=name):
        fusedrnn.convert(torch.nn.Sequential(getattr(torch.nn, cls)(IN, H)), backend=name)
    getattr(fusedrnn, cls)(IN, H)(torch.randn(T, B, IN))      # "auto" runs without CuPy


@pytest.mark.parametrize("backend", ["triton-step", "triton-persistent"])
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_triton_backends_refuse_what_they_cannot_run(cls, backend):
    """An explicitly named backend that cannot run the input (float64) raises ValueError with
    the reason; "auto" would fall back instead."""
    m = getattr(fusedrnn, cls)(IN, H, backend=backend).double()
    with pytest.raises(ValueError, match=f"{backend}.*float64"):
        m(randn(T, B, IN))


@pytest.mark.parametrize("backend", BACKENDS + ["triton-step"])
def test_mixed_weight_dtypes_raise_runtime_error_like_torch(backend):
    """torch raises RuntimeError from its kernel (text varies by device); so does fusedrnn,
    naming the dtypes, before any kernel could silently promote them."""
    ref, ours = twins("lstm", "reference", dtype=torch.float32)
    ours.backend = backend
    for m in (ref, ours):
        m.weight_hh_l1.data = m.weight_hh_l1.data.double()
    inp = randn(T, B, IN, dtype=torch.float32)
    assert outcome(lambda: ref(inp))[0] is RuntimeError
    with pytest.raises(RuntimeError, match="one dtype.*float32.*float64"):
        ours(inp)
