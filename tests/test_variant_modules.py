"""The variant modules end to end (issue 14): LayerNormLSTM/GRU, zoneout and resets, on every
backend that claims them, against the float64 reference backend and against independent
formulations (episodes run separately, torch.nn for neutral options, a LayerNorm loop written
here with torch.nn.functional.layer_norm)."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fusedrnn
from conftest import assert_rel_close

# The Triton backends run under the interpreter (conftest sets TRITON_INTERPRET=1) in float32;
# "torch" and "reference" run in float64.
# "triton-persistent:split" is triton-persistent forced into its hidden-split variant kernels
# (every size here fits the batch-tiled ones), by the autouse fixture below.
BACKENDS = ["torch", "triton-step", "triton-persistent", "triton-persistent:split"]
DTYPE = {"torch": torch.float64, "reference": torch.float64, "triton-step": torch.float32,
         "triton-persistent": torch.float32, "triton-persistent:split": torch.float32}


def _real(backend):
    """The backend name a module takes (``"triton-persistent:split"`` → its backend)."""
    return backend.split(":")[0]


@pytest.fixture(autouse=True)
def _hidden_split_form(request, monkeypatch):
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and str(callspec.params.get("backend", "")).endswith(":split"):
        from fusedrnn.backends import triton_persistent

        monkeypatch.setattr(triton_persistent, "variant_batch_tiled_fits", lambda *a: False)

CLASSES = {
    "lstm": lambda *a, **k: fusedrnn.LSTM(*a, **k),
    "gru": lambda *a, **k: fusedrnn.GRU(*a, **k),
    "rnn_tanh": lambda *a, zoneout=0.0, **k: fusedrnn.RNN(*a, nonlinearity="tanh", **k),
    "rnn_relu": lambda *a, zoneout=0.0, **k: fusedrnn.RNN(*a, nonlinearity="relu", **k),
    "ln_lstm": lambda *a, **k: fusedrnn.LayerNormLSTM(*a, **k),
    "ln_gru": lambda *a, **k: fusedrnn.LayerNormGRU(*a, **k),
}
ZONEOUT_CELLS = ("lstm", "gru", "ln_lstm", "ln_gru")


def _module(cell, backend, In, H, dtype, seed=0, **kwargs):
    torch.manual_seed(seed)
    m = CLASSES[cell](In, H, backend=_real(backend), dtype=torch.float64, **kwargs)
    with torch.no_grad():   # gains and biases away from 1 and 0, so a mix-up of them shows
        for name, p in m.named_parameters():
            if name.startswith("ln_"):
                p.copy_(torch.rand_like(p) + 0.5 if "weight" in name else torch.randn_like(p))
    return m.to(dtype)


def _twin(m, backend, dtype):
    """A copy of ``m`` on ``backend`` in ``dtype`` (same weights)."""
    import copy

    twin = copy.deepcopy(m).to(dtype)
    twin.backend = _real(backend)
    return twin


def _loss_weights(outs, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs]


def _flatten(out):
    y, state = out
    if isinstance(y, torch.nn.utils.rnn.PackedSequence):
        y = y.data
    return [y] + (list(state) if isinstance(state, tuple) else [state])


def _outputs_and_grads(m, x, hx, resets, seed_forward=None):
    """Outputs and the gradient of a seeded weighted sum of all of them with respect to the
    input, the given state and every parameter."""
    m.zero_grad()
    x = x.detach().to(m.weight_ih_l0.dtype).requires_grad_()
    leaves = {"x": x}
    if hx is not None:
        hx = tuple(h.detach().to(x.dtype).requires_grad_() for h in hx)
        leaves.update({f"hx{i}": h for i, h in enumerate(hx)})
        hx = hx if len(hx) == 2 else hx[0]
    if seed_forward is not None:
        torch.manual_seed(seed_forward)
    outs = _flatten(m(x, hx, resets=resets))
    loss = sum((o.double() * w).sum() for o, w in zip(outs, _loss_weights(outs)))
    loss.backward()
    grads = {k: v.grad for k, v in leaves.items()}
    grads.update({k: p.grad for k, p in m.named_parameters()})
    return [o.detach() for o in outs], grads


def _assert_close(ours, ref, dtype, what):
    (o_outs, o_grads), (r_outs, r_grads) = ours, ref
    for i, (a, b) in enumerate(zip(o_outs, r_outs)):
        assert_rel_close(a.double(), b, dtype, f"{what} output {i}")
    assert o_grads.keys() == r_grads.keys()
    for k in r_grads:
        assert o_grads[k] is not None, f"{what}: no gradient for {k}"
        assert_rel_close(o_grads[k].double(), r_grads[k], dtype, f"{what} grad {k}")


def _resets(T, B, at, batch_first=False):
    r = torch.zeros(T, B, dtype=torch.bool)
    for t, b in at:
        r[t, b] = True
    return r.t().contiguous() if batch_first else r


OPTIONS = {
    # name: (module kwargs, resets positions, training)
    "plain": ({}, None, False),
    "resets": ({}, [(0, 0), (2, 1), (3, 1), (4, 0)], False),   # t=0, consecutive, last step
    "zoneout-train": ({"zoneout": 0.3}, None, True),
    "zoneout-eval": ({"zoneout": 0.3}, None, False),
    "zoneout-resets": ({"zoneout": 0.5}, [(1, 0), (2, 0)], True),
}


# Every (cell, option) that exists: the RNN has no zoneout (nor has torch.nn.RNN), and the
# classic cells without options are test_module_parity's.
CELL_OPTIONS = [(c, o) for c in CLASSES for o in OPTIONS
                if not ("zoneout" in o and c not in ZONEOUT_CELLS)
                and not (o == "plain" and not c.startswith("ln_"))]


@pytest.mark.parametrize("cell, option", CELL_OPTIONS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_reference(backend, cell, option):
    kwargs, at, training = OPTIONS[option]
    T, B, In, H = 5, 2, 3, 5
    ref_m = _module(cell, "reference", In, H, torch.float64, bidirectional=True, **kwargs)
    ref_m.train(training)
    ours = _twin(ref_m, backend, DTYPE[backend])
    torch.manual_seed(3)
    x = torch.randn(T, B, In, dtype=torch.float64)
    h0 = tuple(torch.randn(2, B, H, dtype=torch.float64)
               for _ in range(2 if "lstm" in cell else 1))
    resets = None if at is None else _resets(T, B, at)
    ref = _outputs_and_grads(ref_m, x, h0, resets, seed_forward=7)
    got = _outputs_and_grads(ours, x, h0, resets, seed_forward=7)
    _assert_close(got, ref, DTYPE[backend], f"{cell} {option} on {backend}")


@pytest.mark.parametrize("cell", ["lstm", "ln_gru"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_input_with_resets_and_two_layers(backend, cell):
    """PackedSequence (unsorted lengths), two layers, bidirectional, batch_first resets."""
    T, B, In, H = 4, 3, 3, 3
    ref_m = _module(cell, "reference", In, H, torch.float64, num_layers=2, bidirectional=True,
                    batch_first=True)
    ours = _twin(ref_m, backend, DTYPE[backend])
    torch.manual_seed(4)
    x = torch.randn(B, T, In, dtype=torch.float64)
    lengths = torch.tensor([2, 4, 1])
    resets = _resets(T, B, [(1, 0), (2, 1), (3, 1)], batch_first=True)

    def run(m):
        m.zero_grad()
        xx = x.to(m.weight_ih_l0.dtype).requires_grad_()
        packed = pack_padded_sequence(xx, lengths, batch_first=True, enforce_sorted=False)
        out, state = m(packed, resets=resets)
        y, _ = pad_packed_sequence(out, batch_first=True)
        outs = [y] + (list(state) if isinstance(state, tuple) else [state])
        sum((o.double() * w).sum() for o, w in zip(outs, _loss_weights(outs))).backward()
        grads = {"x": xx.grad, **{k: p.grad for k, p in m.named_parameters()}}
        return [o.detach() for o in outs], grads

    _assert_close(run(ours), run(ref_m), DTYPE[backend], f"packed {cell} on {backend}")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_relu", "ln_lstm"])
@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
def test_resets_equal_separate_episodes(backend, cell):
    """A reset at t=k makes [0, k) and [k, T) independent episodes in both directions and both
    layers: the same outputs as running each alone from h0, and the gradient of h0 is the sum of
    the episodes' gradients (none flows across the boundary)."""
    T, B, In, H, k = 5, 1, 3, 3, 2
    dtype = DTYPE[backend]
    m = _module(cell, backend, In, H, dtype, num_layers=2, bidirectional=True)
    torch.manual_seed(5)
    x = torch.randn(T, B, In, dtype=dtype)
    n_states = 2 if "lstm" in cell else 1
    h0 = [torch.randn(4, B, H, dtype=dtype, requires_grad=True) for _ in range(n_states)]
    hx = tuple(h0) if n_states == 2 else h0[0]
    y, _ = m(x, hx, resets=_resets(T, B, [(k, 0)]))
    w = torch.randn(y.shape, dtype=dtype)
    g_joint = torch.autograd.grad((y * w).sum(), h0)
    parts = [m(x[:k], hx)[0], m(x[k:], hx)[0]]
    assert_rel_close(y, torch.cat(parts), dtype, "outputs")
    g_sep = torch.autograd.grad((parts[0] * w[:k]).sum() + (parts[1] * w[k:]).sum(), h0)
    for a, b in zip(g_joint, g_sep):
        assert_rel_close(a, b, dtype, "h0 gradient")


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
def test_zoneout_one_keeps_the_initial_state(backend):
    """p = 1 keeps every element, in training (mask all ones) and in eval (expectation): the
    output is h0 at every step, whatever the input."""
    dtype = DTYPE[backend]
    m = _module("ln_lstm", backend, 3, 5, dtype, zoneout=1.0, bidirectional=True)
    x = torch.randn(4, 2, 3, dtype=dtype)
    h0, c0 = torch.randn(2, 2, 5, dtype=dtype), torch.randn(2, 2, 5, dtype=dtype)
    for training in (True, False):
        m.train(training)
        y, (h_n, _) = m(x, (h0, c0))
        expect = torch.cat([h0[0], h0[1]], dim=-1).expand(4, 2, 10)
        torch.testing.assert_close(y, expect, rtol=0, atol=0)
        torch.testing.assert_close(h_n, h0, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zoneout_masks_are_the_same_across_backends(backend):
    """One seed, one mask: the training-mode output of every backend equals the reference's
    (tolerance as for any output) and differs from another seed's."""
    dtype = DTYPE[backend]
    ref_m = _module("gru", "reference", 3, 5, torch.float64, zoneout=0.5)
    ours = _twin(ref_m, backend, dtype)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    torch.manual_seed(11)
    ref = ref_m(x)[0]
    torch.manual_seed(11)
    got = ours(x.to(dtype))[0]
    assert_rel_close(got.double(), ref, dtype, "same seed")
    torch.manual_seed(12)
    other = ours(x.to(dtype))[0]
    assert (other.double() - ref).abs().max() > 1e-3, "another seed must draw another mask"


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
def test_neutral_options_reproduce_torch_nn(backend, cell):
    """Resets that never fire send the layer through the variant path (the variant kernels on
    the Triton backends); it must reproduce torch.nn's cell exactly as the classic path does."""
    dtype = DTYPE[backend]
    torch.manual_seed(0)
    ref = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU,
           "rnn_tanh": torch.nn.RNN}[cell](3, 5, bidirectional=True, dtype=torch.float64)
    ours = fusedrnn.convert(_twin(ref, "auto", torch.float64), backend=_real(backend)).to(dtype)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    never = torch.zeros(4, 2, dtype=torch.bool)
    want = _flatten(ref(x))
    got = _flatten(ours(x.to(dtype), resets=never))
    for a, b in zip(got, want):
        assert_rel_close(a.double(), b.detach(), dtype, f"{cell} on {backend}")


def _layer_norm_lstm_loop(m, x, h, c):
    """A LayerNorm LSTM written from the issue's equations with F.layer_norm, one direction,
    one layer: independent of fusedrnn's composite, kernels and reference."""
    H = m.hidden_size
    ys = []
    for t in range(x.shape[0]):
        a = (F.layer_norm(x[t] @ m.weight_ih_l0.t(), (4 * H,), m.ln_ih_weight_l0, eps=1e-5)
             + F.layer_norm(h @ m.weight_hh_l0.t(), (4 * H,), m.ln_hh_weight_l0, eps=1e-5)
             + m.bias_ih_l0 + m.bias_hh_l0)
        i, f, g, o = a.split(H, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(
            F.layer_norm(c, (H,), m.ln_cell_weight_l0, m.ln_cell_bias_l0, eps=1e-5))
        ys.append(h)
    return torch.stack(ys), h, c


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
def test_layer_norm_lstm_matches_the_equations(backend):
    dtype = DTYPE[backend]
    m = _module("ln_lstm", backend, 3, 5, torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    h0, c0 = torch.randn(1, 2, 5, dtype=torch.float64), torch.randn(1, 2, 5, dtype=torch.float64)
    want = _layer_norm_lstm_loop(m, x, h0[0], c0[0])
    y, (h_n, c_n) = m.to(dtype)(x.to(dtype), (h0.to(dtype), c0.to(dtype)))
    for a, b, what in zip((y, h_n[0], c_n[0]), want, ("y", "h_n", "c_n")):
        assert_rel_close(a.double(), b.detach(), dtype, what)


def test_layer_norm_parameters():
    m = fusedrnn.LayerNormLSTM(3, 5, num_layers=2, bidirectional=True)
    shapes = {k: tuple(v.shape) for k, v in m.named_parameters() if k.startswith("ln_")}
    assert shapes == {f"{base}_l{k}{sfx}": (n,) for k in range(2) for sfx in ("", "_reverse")
                      for base, n in (("ln_ih_weight", 20), ("ln_hh_weight", 20),
                                      ("ln_cell_weight", 5), ("ln_cell_bias", 5))}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    m.reset_parameters()
    for k, p in m.named_parameters():
        if k.startswith("ln_"):
            assert torch.equal(p, torch.zeros_like(p) if "bias" in k else torch.ones_like(p)), k
        else:
            assert p.abs().max() <= 5 ** -0.5, k   # torch's uniform(-1/sqrt(H), 1/sqrt(H))
    g = fusedrnn.LayerNormGRU(3, 5)
    assert sorted(k for k in g.state_dict() if k.startswith("ln_")) == ["ln_hh_weight_l0",
                                                                       "ln_ih_weight_l0"]
    twin = fusedrnn.LayerNormLSTM(3, 5, num_layers=2, bidirectional=True)
    twin.load_state_dict(m.state_dict())
    x = torch.randn(2, 1, 3)
    torch.testing.assert_close(twin(x)[0], m(x)[0], rtol=0, atol=0)


# ------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("bad, message", [
    (torch.zeros(4, 2), "resets must be a torch.bool tensor, got torch.float32"),
    (torch.zeros(4, 3, dtype=torch.bool), r"resets must have shape \(T, B\) = \(4, 2\)"),
    (torch.zeros(2, 4, dtype=torch.bool), r"resets must have shape \(T, B\) = \(4, 2\)"),
    ([[False, True]] * 4, "resets must be a torch.bool tensor, got list"),
])
def test_bad_resets(bad, message):
    m = fusedrnn.LSTM(3, 5)
    with pytest.raises(ValueError, match=message):
        m(torch.randn(4, 2, 3), resets=bad)


def test_bad_resets_batch_first_and_unbatched():
    m = fusedrnn.GRU(3, 5, batch_first=True)
    with pytest.raises(ValueError, match=r"\(B, T\) = \(2, 4\)"):
        m(torch.randn(2, 4, 3), resets=torch.zeros(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(T,\) = \(4,\)"):
        m(torch.randn(4, 3), resets=torch.zeros(4, 1, dtype=torch.bool))
    y, _ = m(torch.randn(4, 3), resets=torch.zeros(4, dtype=torch.bool))
    assert y.shape == (4, 5)


@pytest.mark.parametrize("p", [-0.1, 1.5, True, "0.1", float("nan")])
def test_bad_zoneout(p):
    for cls in (fusedrnn.LSTM, fusedrnn.GRU, fusedrnn.LayerNormLSTM, fusedrnn.LayerNormGRU):
        with pytest.raises(ValueError, match="zoneout should be a number in range"):
            cls(3, 5, zoneout=p)


def test_rnn_has_no_zoneout_and_layer_norm_lstm_no_projection():
    with pytest.raises(TypeError):
        fusedrnn.RNN(3, 5, zoneout=0.1)
    with pytest.raises(ValueError, match="has no projection"):
        fusedrnn.LayerNormLSTM(3, 5, proj_size=2)
