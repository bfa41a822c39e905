"""torch.func on every backend: grad, vjp, jacrev, vmap (folded and per-sample), and per-sample
gradients from vmap(grad(...)) against a per-sample loop."""

import pytest
import torch
from torch.func import functional_call, grad, jacrev, vjp, vmap

import fusedrnn
from fusedrnn.layer_config import LayerConfig
from conftest import assert_rel_close
from layer_cases import layer_inputs, op_call, outputs

BACKENDS = ["reference", "torch", "triton-step", "triton-persistent"]


def _dtype(backend):
    # The Triton backends refuse float64 (fp32 is their widest dtype).
    return torch.float32 if backend.startswith("triton") else torch.float64


def _model(backend, cls=fusedrnn.LSTM, **kw):
    torch.manual_seed(0)
    return cls(2, 3, bidirectional=True, backend=backend, **kw).to(_dtype(backend))


def _loss(model, params, x):
    out, hidden = functional_call(model, params, (x,))
    h_n = hidden[0] if isinstance(hidden, tuple) else hidden
    return (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum() + h_n.square().sum()


def _randn(*shape, dtype, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_and_vjp_match_autograd(backend):
    model = _model(backend)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = _randn(3, 2, 2, dtype=_dtype(backend))
    loss = _loss(model, dict(model.named_parameters()), x)
    want = dict(zip(params, torch.autograd.grad(loss, list(model.parameters()))))
    got = grad(lambda p: _loss(model, p, x))(params)
    _, pullback = vjp(lambda p: _loss(model, p, x), params)
    (got_vjp,) = pullback(torch.ones((), dtype=x.dtype))
    for k in want:
        assert_rel_close(got[k], want[k], x.dtype, f"grad {k}")
        assert_rel_close(got_vjp[k], want[k], x.dtype, f"vjp {k}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_jacrev_matches_row_by_row_autograd(backend):
    model = _model(backend, fusedrnn.GRU)
    x = _randn(2, 1, 2, dtype=_dtype(backend))     # T=2, B=1
    jac = jacrev(lambda x: model(x)[0])(x)         # [T, B, 2H, T, B, In]
    xg = x.clone().requires_grad_()
    out = model(xg)[0].reshape(-1)
    rows = torch.stack([torch.autograd.grad(out[i], xg, retain_graph=True)[0] for i in range(out.numel())])
    assert_rel_close(jac.reshape(rows.shape), rows, x.dtype, "jacobian")


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_forward_folds_and_matches_a_loop(backend):
    model = _model(backend, proj_size=2)
    xs = _randn(3, 2, 1, 2, dtype=_dtype(backend))  # N=3 samples of [T=2, B=1, In=2]
    out, (h, c) = vmap(model)(xs)
    for i in range(3):
        o, (hi, ci) = model(xs[i])
        for a, b, name in ((out[i], o, "output"), (h[i], hi, "h_n"), (c[i], ci, "c_n")):
            assert_rel_close(a, b, xs.dtype, f"sample {i} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_over_stacked_weights_runs_per_sample(backend):
    """Model ensembling: N weight sets, vmapped; the rule cannot fold and loops."""
    models = [_model(backend, fusedrnn.RNN) for _ in range(2)]
    with torch.no_grad():
        for i, m in enumerate(models):
            for p in m.parameters():
                p.mul_(1 + i)
    stacked = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models])
               for k, _ in models[0].named_parameters()}
    x = _randn(2, 2, 2, dtype=_dtype(backend))
    out = vmap(lambda p: functional_call(models[0], p, (x,))[0])(stacked)
    for i, m in enumerate(models):
        assert_rel_close(out[i], m(x)[0], x.dtype, f"ensemble member {i}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [fusedrnn.LSTM, fusedrnn.GRU])
def test_per_sample_gradients_match_a_per_sample_loop(backend, cls):
    """vmap(grad(...)), as differentially private training (Opacus) needs."""
    model = _model(backend, cls)
    params = {k: v.detach() for k, v in model.named_parameters()}
    xs = _randn(3, 2, 1, 2, dtype=_dtype(backend))  # N=3 samples, each T=2, B=1
    per_sample = vmap(grad(lambda p, x: _loss(model, p, x)), in_dims=(None, 0))(params, xs)
    for i in range(xs.shape[0]):
        loss = _loss(model, dict(model.named_parameters()), xs[i])
        want = torch.autograd.grad(loss, list(model.parameters()))
        for k, w in zip(params, want):
            assert per_sample[k].shape == (3,) + w.shape
            assert_rel_close(per_sample[k][i], w, xs.dtype, f"sample {i} grad {k}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_grad_with_lengths_sorts_the_folded_rows(backend):
    """Shared lengths [2, 1] folded over N=2 give rows with lengths 2,1,2,1: the rule must sort
    them for the op's non-increasing contract and unsort the results."""
    cfg = LayerConfig("LSTM", True, True, False)
    dtype = _dtype(backend)
    x, lengths, h0, c0, weights = layer_inputs(cfg, T=2, B=2, In=2, H=3, dtype=dtype, lengths=[2, 1])
    xs = torch.stack([x.detach(), 2 * x.detach()])
    weights = [w.detach() for w in weights]

    def loss(weights, x):
        y, h_n, c_n = op_call(cfg, backend, x, lengths, h0.detach(), c0.detach(), weights)
        return y.square().sum() + h_n.sum() + c_n.sum()

    from fusedrnn.ops.layer_autograd import LayerForward

    def eager_loss(weights, x):
        y, h_n, c_n, _ = LayerForward.apply(cfg, backend, x, lengths, h0.detach(), c0.detach(), *weights)
        return y.square().sum() + h_n.sum() + c_n.sum()

    got = vmap(grad(eager_loss), in_dims=(None, 0))(weights, xs)
    outs = vmap(lambda x: outputs(op_call(cfg, backend, x, lengths, h0, c0, weights)))(xs)
    for i in range(2):
        leaves = [w.clone().requires_grad_() for w in weights]
        want = torch.autograd.grad(loss(leaves, xs[i]), leaves)
        for j, (a, b) in enumerate(zip(got, want)):
            assert_rel_close(a[i], b, dtype, f"sample {i} weight grad {j}")
        for j, (a, b) in enumerate(zip(outs, outputs(op_call(cfg, backend, xs[i], lengths, h0, c0, weights)))):
            assert_rel_close(a[i], b, dtype, f"sample {i} output {j}")


def test_vmap_folds_the_vmapped_dimension_into_one_batched_call(monkeypatch):
    from fusedrnn.backends import registry

    backend = registry.AVAILABLE["reference"]
    seen = []
    real_forward = backend.forward

    def recording_forward(cfg, x, *args):
        seen.append(tuple(x.shape))
        return real_forward(cfg, x, *args)

    monkeypatch.setattr(backend, "forward", recording_forward)
    model = _model("reference", fusedrnn.GRU)
    vmap(model)(_randn(4, 2, 3, 2, dtype=torch.float64))   # N=4 samples of [T=2, B=3, In=2]
    assert seen == [(2, 12, 2)], "one call on N*B = 12 rows"


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_mode_jacfwd_hvp_and_hessian_match_torch_nn(backend):
    """Forward mode: jacfwd of the output, jvp(grad(...)) (forward-over-reverse
    Hessian-vector products) and torch.func.hessian, against torch.nn in float64."""
    from torch.func import jacfwd

    dtype = _dtype(backend)
    torch.manual_seed(0)
    ref = torch.nn.LSTM(2, 3, bidirectional=True).double()
    ours = fusedrnn.LSTM(2, 3, bidirectional=True, backend=backend).to(dtype)
    ours.load_state_dict({k: v.to(dtype) for k, v in ref.state_dict().items()})
    x = _randn(2, 1, 2, dtype=torch.float64)
    v = _randn(2, 1, 2, dtype=torch.float64, seed=2)

    def loss(module):
        return lambda x: module(x)[0].square().sum() + module(x)[1][1].sum()

    got = jacfwd(lambda x: ours(x)[0])(x.to(dtype))
    want = jacrev(lambda x: ref(x)[0])(x)
    assert_rel_close(got, want, dtype, "jacfwd")
    got = vjp_free_hvp(loss(ours), x.to(dtype), v.to(dtype))
    want = vjp_free_hvp(loss(ref), x, v)
    assert_rel_close(got, want, dtype, "jvp(grad) Hessian-vector product")
    got = torch.func.hessian(loss(ours))(x.to(dtype))          # jacfwd(jacrev(...))
    want = jacrev(jacrev(loss(ref)))(x)
    assert_rel_close(got, want, dtype, "hessian")


def vjp_free_hvp(f, x, v):
    from torch.func import jvp

    return jvp(grad(f), (x,), (v,))[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_over_the_initial_state_only_matches_a_loop(backend):
    """h0 (and c0) vmapped while x is shared, at a non-zero in_dim, with out_dims=1."""
    model = _model(backend)
    dtype = _dtype(backend)
    x = _randn(3, 2, 2, dtype=dtype)                       # [T=3, B=2, In=2], shared
    h0s = _randn(2, 4, 2, 3, dtype=dtype, seed=2)          # N=4 at dim 1 of [D, N, B, H]
    c0s = _randn(2, 4, 2, 3, dtype=dtype, seed=3)

    def run(h0, c0):
        return model(x, (h0, c0))[0]
    out = vmap(run, in_dims=(1, 1), out_dims=1)(h0s, c0s)  # [T, N, B, D*H]
    for i in range(4):
        assert_rel_close(out[:, i], run(h0s[:, i], c0s[:, i]), dtype, f"sample {i}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_nested_vmap_matches_a_double_loop(backend):
    model = _model(backend, fusedrnn.GRU)
    dtype = _dtype(backend)
    xs = _randn(2, 3, 2, 1, 2, dtype=dtype)                # [N1=2, N2=3, T=2, B=1, In=2]
    out = vmap(vmap(lambda x: model(x)[0]))(xs)
    for i in range(2):
        for j in range(3):
            assert_rel_close(out[i, j], model(xs[i, j])[0], dtype, f"sample {i},{j}")
