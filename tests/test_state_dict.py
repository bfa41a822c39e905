"""fusedrnn modules are torch.nn modules as far as parameters go: state_dict keys and loading in
both directions, initialisation, repr, pickling, torch.func.functional_call, dtype casts."""

import io
import itertools

import pytest
import torch
from torch import nn

import fusedrnn
from conftest import assert_rel_close

BACKENDS = ["reference", "torch"]
IN, H, P, T, B = 3, 5, 2, 4, 3
F64 = torch.float64

CELLS = {  # name -> (torch class, fusedrnn class, extra constructor kwargs)
    "lstm": (nn.LSTM, fusedrnn.LSTM, {}),
    "lstm_proj": (nn.LSTM, fusedrnn.LSTM, {"proj_size": P}),
    "gru": (nn.GRU, fusedrnn.GRU, {}),
    "rnn_tanh": (nn.RNN, fusedrnn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNN, fusedrnn.RNN, {"nonlinearity": "relu"}),
}

CONFIGS = [
    pytest.param(dict(cell=cell, num_layers=layers, bidirectional=bidir, bias=bias),
                 id=f"{cell}-L{layers}-{'bi' if bidir else 'uni'}-{'bias' if bias else 'nobias'}")
    for cell, layers, bidir, bias in itertools.product(CELLS, (1, 2, 3), (False, True), (True, False))
]
# A smaller set for the slower checks that run both backends.
SMALL_CONFIGS = [
    pytest.param(dict(cell=cell, num_layers=layers, bidirectional=bidir, bias=bias),
                 id=f"{cell}-L{layers}-{'bi' if bidir else 'uni'}-{'bias' if bias else 'nobias'}")
    for cell, (layers, bidir, bias) in itertools.product(
        CELLS, ((1, False, True), (2, True, False), (3, True, True)))
]


def kwargs_of(cfg):
    return dict(num_layers=cfg["num_layers"], bidirectional=cfg["bidirectional"],
                bias=cfg["bias"], **CELLS[cfg["cell"]][2])


def build_torch(cfg, seed=0, **extra):
    torch.manual_seed(seed)
    return CELLS[cfg["cell"]][0](IN, H, **kwargs_of(cfg), **extra)


def build_ours(cfg, seed=0, **extra):
    torch.manual_seed(seed)
    return CELLS[cfg["cell"]][1](IN, H, **kwargs_of(cfg), **extra)


def state_shapes(cfg, batch=B):
    D = 2 if cfg["bidirectional"] else 1
    w = CELLS[cfg["cell"]][2].get("proj_size", 0) or H
    return (cfg["num_layers"] * D, batch, w), (cfg["num_layers"] * D, batch, H)


def make_input(cfg, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, IN, generator=g, dtype=F64)
    hs, cs = state_shapes(cfg)
    h0 = torch.randn(*hs, generator=g, dtype=F64)
    hx = (h0, torch.randn(*cs, generator=g, dtype=F64)) if cfg["cell"].startswith("lstm") else h0
    return x, hx


def flat(result):
    out, hidden = result
    return [out] + (list(hidden) if isinstance(hidden, tuple) else [hidden])


def assert_same_outputs(ours, ref, what):
    ours, ref = flat(ours), flat(ref)
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.dtype == b.dtype, f"{what} output {i}: dtype {a.dtype} != {b.dtype}"
        assert_rel_close(a, b, F64, f"{what} output {i}")


# --- state_dict ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS)
def test_state_dict_keys_and_shapes_match_torch(cfg):
    ref_sd, our_sd = build_torch(cfg).state_dict(), build_ours(cfg).state_dict()
    assert list(our_sd.keys()) == list(ref_sd.keys())
    for k in ref_sd:
        assert our_sd[k].shape == ref_sd[k].shape, k
        assert our_sd[k].dtype == ref_sd[k].dtype, k
    assert [n for n, _ in build_ours(cfg).named_parameters()] == \
        [n for n, _ in build_torch(cfg).named_parameters()]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_state_dict_loads_both_ways_and_outputs_agree(cfg):
    ref = build_torch(cfg, seed=0).double()
    ours = build_ours(cfg, seed=1, backend="torch").double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    back = build_torch(cfg, seed=2).double()
    back.load_state_dict(ours.state_dict(), strict=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    x, hx = make_input(cfg)
    with torch.no_grad():
        expected = ref(x, hx)
        assert_same_outputs(ours(x, hx), expected, "fusedrnn after loading torch's state_dict")
        assert_same_outputs(back(x, hx), expected, "torch after loading fusedrnn's state_dict")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", SMALL_CONFIGS)
def test_loaded_state_dict_outputs_agree_per_backend(cfg, backend):
    ref = build_torch(cfg, seed=0).double()
    ours = build_ours(cfg, seed=1, backend=backend).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x, hx = make_input(cfg)
    with torch.no_grad():
        assert_same_outputs(ours(x, hx), ref(x, hx), f"{backend} after load_state_dict")
        assert_same_outputs(ours(x), ref(x), f"{backend} after load_state_dict, no h0")


@pytest.mark.parametrize("cfg", SMALL_CONFIGS)
def test_strict_loading_rejects_a_mismatched_state_dict_like_torch(cfg):
    """A state_dict with a missing key fails under strict=True in both, with the same text."""
    sd = build_torch(cfg).state_dict()
    sd.pop(next(iter(sd)))
    errors = []
    for module in (build_torch(cfg), build_ours(cfg)):
        with pytest.raises(RuntimeError) as info:
            module.load_state_dict(sd, strict=True)
        errors.append(str(info.value))
    ref_msg, our_msg = errors
    assert "Missing key" in ref_msg
    assert our_msg == ref_msg  # the class names are the same, so the texts are too


# --- initialisation -----------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS)
def test_initialisation_is_torchs(cfg):
    ref, ours = build_torch(cfg, seed=123), build_ours(cfg, seed=123)
    for (rn, rp), (on, op) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        assert on == rn
        assert type(op) is type(rp) is nn.Parameter
        assert op.dtype == rp.dtype == torch.float32
        assert torch.equal(op, rp), rn
    # and the random stream after construction is in the same place
    torch.manual_seed(5)
    CELLS[cfg["cell"]][0](IN, H, **kwargs_of(cfg))
    after_ref = torch.rand(3)
    torch.manual_seed(5)
    CELLS[cfg["cell"]][1](IN, H, **kwargs_of(cfg))
    assert torch.equal(torch.rand(3), after_ref)


@pytest.mark.parametrize("cell", CELLS)
def test_initialisation_with_dtype_keyword_is_torchs(cell):
    cfg = dict(cell=cell, num_layers=2, bidirectional=True, bias=True)
    ref, ours = build_torch(cfg, seed=9, dtype=F64), build_ours(cfg, seed=9, dtype=F64)
    for rp, op in zip(ref.parameters(), ours.parameters(), strict=True):
        assert op.dtype == rp.dtype == F64
        assert torch.equal(op, rp)


# --- repr ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS)
def test_repr_equals_torchs_for_auto(cfg):
    ref = build_torch(cfg)
    assert repr(build_ours(cfg)) == repr(ref)
    assert repr(build_ours(cfg, backend="auto")) == repr(ref)
    assert type(build_ours(cfg)).__name__ == type(ref).__name__


@pytest.mark.parametrize("backend", BACKENDS)
def test_repr_names_an_explicit_backend(backend):
    cfg = dict(cell="gru", num_layers=2, bidirectional=False, bias=True)
    text = repr(build_ours(cfg, backend=backend))
    assert text.startswith(repr(build_torch(cfg))[:-1])
    assert backend in text


# --- pickling -----------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["auto"] + BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_torch_save_load_whole_module_round_trips(cell, backend):
    cfg = dict(cell=cell, num_layers=2, bidirectional=True, bias=True)
    ours = build_ours(cfg, backend=backend, batch_first=False).double().eval()
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert type(loaded) is type(ours)
    assert loaded.backend == backend
    assert loaded.training is False
    assert repr(loaded) == repr(ours)
    assert list(loaded.state_dict()) == list(ours.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
        assert loaded.state_dict()[k].data_ptr() != v.data_ptr()
    x, hx = make_input(cfg)
    with torch.no_grad():
        expected = ours(x, hx)
        got = loaded(x, hx)
    for a, b in zip(flat(got), flat(expected), strict=True):
        assert torch.equal(a, b)
    # the loaded module is live: changing its weights changes its output
    with torch.no_grad():
        loaded.weight_ih_l0.mul_(2)
        assert not torch.equal(loaded(x, hx)[0], expected[0])


# --- torch.func.functional_call -----------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", SMALL_CONFIGS)
def test_functional_call_uses_the_substituted_parameters(cfg, backend):
    ref = build_torch(cfg, seed=0).double()
    ours = build_ours(cfg, seed=0, backend=backend).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    g = torch.Generator().manual_seed(3)
    params = {n: (0.5 * torch.randn(p.shape, generator=g, dtype=F64)).requires_grad_()
              for n, p in ref.named_parameters()}
    x, hx = make_input(cfg)
    own_before = {n: p.detach().clone() for n, p in ours.named_parameters()}

    ref_res = torch.func.functional_call(ref, params, (x, hx))
    our_res = torch.func.functional_call(ours, params, (x, hx))
    assert_same_outputs(our_res, ref_res, "functional_call")
    # the substitution really happened: the module's own weights give something else
    with torch.no_grad():
        plain = ours(x, hx)
    assert not torch.allclose(flat(plain)[0], flat(our_res)[0])
    # and the module's own parameters are untouched afterwards
    for n, p in ours.named_parameters():
        assert torch.equal(p, own_before[n]), n

    # gradients flow to the substituted tensors, as in torch
    def grads(result):
        loss = sum((o * (1.0 + torch.arange(o.numel(), dtype=F64).reshape(o.shape) / o.numel())).sum()
                   for o in flat(result))
        return torch.autograd.grad(loss, list(params.values()))

    for name, a, b in zip(params, grads(our_res), grads(ref_res), strict=True):
        assert_rel_close(a, b, F64, f"functional_call grad {name}")


# --- dtype casts --------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cast", ["to", "double"])
@pytest.mark.parametrize("cell", CELLS)
def test_casting_to_float64_works(cell, cast, backend):
    cfg = dict(cell=cell, num_layers=2, bidirectional=True, bias=True)
    ref = build_torch(cfg, seed=4)
    ours = build_ours(cfg, seed=4, backend=backend)
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    if cast == "to":
        ref, result = ref.to(F64), ours.to(F64)
    else:
        ref, result = ref.double(), ours.double()
    assert result is ours
    assert all(p.dtype == F64 for p in ours.parameters())
    assert all(isinstance(p, nn.Parameter) for p in ours.parameters())
    assert all(w.dtype == F64 for w in ours._flat_weights)
    for (rn, rp), (on, op) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        assert torch.equal(op, rp), rn
    x, hx = make_input(cfg)
    with torch.no_grad():
        assert_same_outputs(ours(x, hx), ref(x, hx), f".{cast}(float64)")
    # float32 input to the float64 module is the same error as torch's
    with pytest.raises(ValueError) as ours_err:
        ours(x.float())
    with pytest.raises(ValueError) as ref_err:
        ref(x.float())
    assert str(ours_err.value) == str(ref_err.value)
