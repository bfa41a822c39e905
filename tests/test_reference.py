"""The NumPy reference's hand-written BPTT against finite differences and torch autograd."""

import numpy as np
import pytest
import torch

from fusedrnn import reference

CELL_CASES = [  # (mode, hidden, proj)
    ("LSTM", 3, 0),
    ("LSTM", 4, 2),
    ("GRU", 3, 0),
    ("RNN_TANH", 3, 0),
    ("RNN_RELU", 3, 0),
]


def _make_problem(mode, H, P, *, T=3, B=2, In=2, L=2, D=2, lengths=(3, 1), bias=True, seed=0):
    rng = np.random.default_rng(seed)
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    Hr = P or H
    params = []
    for layer in range(L):
        width = In if layer == 0 else D * Hr
        dirs = []
        for _ in range(D):
            p = {"w_ih": rng.normal(0, 0.6, (G * H, width)), "w_hh": rng.normal(0, 0.6, (G * H, Hr))}
            if bias:
                p["b_ih"], p["b_hh"] = rng.normal(0, 0.3, G * H), rng.normal(0, 0.3, G * H)
            if P:
                p["w_hr"] = rng.normal(0, 0.6, (P, H))
            dirs.append(p)
        params.append(dirs)
    x = rng.normal(size=(T, B, In))
    h0 = rng.normal(0, 0.5, (L * D, B, Hr))
    c0 = rng.normal(0, 0.5, (L * D, B, H)) if mode == "LSTM" else None
    masks = [rng.choice([0.0, 2.0], size=(T, B, D * Hr)) for _ in range(L - 1)]  # p = 0.5
    lengths = None if lengths is None else np.array(lengths)
    return dict(x=x, lengths=lengths, h0=h0, c0=c0, params=params, masks=masks)


def _loss_weights(problem, mode, seed=1):
    rng = np.random.default_rng(seed)
    y, h, c, _ = _forward(mode, problem)
    return rng.normal(size=y.shape), rng.normal(size=h.shape), (None if c is None else rng.normal(size=c.shape))


def _forward(mode, pr):
    return reference.stack_forward(reference.CELLS[mode], pr["x"], pr["lengths"], pr["h0"], pr["c0"],
                                   pr["params"], pr["masks"])


def _loss(mode, pr, gy, gh, gc):
    y, h, c, _ = _forward(mode, pr)
    total = (y * gy).sum() + (h * gh).sum()
    return total + ((c * gc).sum() if c is not None else 0.0)


def _leaves(pr):
    """Every array the loss depends on, as (name, array) — gradients are checked for each."""
    yield "x", pr["x"]
    yield "h0", pr["h0"]
    if pr["c0"] is not None:
        yield "c0", pr["c0"]
    for k, layer in enumerate(pr["params"]):
        for d, p in enumerate(layer):
            for name, arr in p.items():
                yield f"l{k}d{d}.{name}", arr


def _analytic(mode, pr, gy, gh, gc):
    *_, cache = _forward(mode, pr)
    dx, dh0, dc0, dparams = reference.stack_backward(cache, gy, gh, gc)
    out = {"x": dx, "h0": dh0}
    if dc0 is not None:
        out["c0"] = dc0
    for k, layer in enumerate(dparams):
        for d, g in enumerate(layer):
            for name, arr in g.items():
                out[f"l{k}d{d}.{name}"] = arr
    return out


@pytest.mark.parametrize("mode,H,P", CELL_CASES)
@pytest.mark.parametrize("lengths", [None, (3, 1)], ids=["dense", "varlen"])
def test_backward_matches_finite_differences(mode, H, P, lengths):
    pr = _make_problem(mode, H, P, lengths=lengths)
    gy, gh, gc = _loss_weights(pr, mode)
    analytic = _analytic(mode, pr, gy, gh, gc)
    eps = 1e-6
    checked = 0
    for name, arr in _leaves(pr):
        numeric = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            keep = arr[idx]
            arr[idx] = keep + eps
            up = _loss(mode, pr, gy, gh, gc)
            arr[idx] = keep - eps
            down = _loss(mode, pr, gy, gh, gc)
            arr[idx] = keep
            numeric[idx] = (up - down) / (2 * eps)
        # Central differences carry O(eps²)≈1e-12 truncation and ~1e-10 cancellation error.
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)
        checked += 1
    assert checked == len(analytic)


def test_finite_differences_without_bias():
    pr = _make_problem("GRU", 3, 0, bias=False, L=1, D=1, lengths=None)
    gy, gh, gc = _loss_weights(pr, "GRU")
    analytic = _analytic("GRU", pr, gy, gh, gc)
    assert set(analytic) == {"x", "h0", "l0d0.w_ih", "l0d0.w_hh"}
    arr, idx, eps = pr["params"][0][0]["w_hh"], (1, 2), 1e-6
    keep = arr[idx]
    arr[idx] = keep + eps
    up = _loss("GRU", pr, gy, gh, gc)
    arr[idx] = keep - eps
    down = _loss("GRU", pr, gy, gh, gc)
    arr[idx] = keep
    assert abs(analytic["l0d0.w_hh"][idx] - (up - down) / (2 * eps)) < 1e-8


# ---- against torch autograd: single-layer torch modules composed with the same masks ---------

_TORCH = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN_TANH": torch.nn.RNN, "RNN_RELU": torch.nn.RNN}
_NAMES = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh", "w_hr": "weight_hr"}


def _torch_layer(mode, pr, k, H, P):
    D = len(pr["params"][k])
    In = pr["params"][k][0]["w_ih"].shape[1]
    kw = {"proj_size": P} if P else {}
    if mode.startswith("RNN"):
        kw["nonlinearity"] = mode[4:].lower()
    m = _TORCH[mode](In, H, bidirectional=D == 2, **kw).double()
    with torch.no_grad():
        for d, p in enumerate(pr["params"][k]):
            for name, arr in p.items():
                getattr(m, f"{_NAMES[name]}_l0{'_reverse' if d else ''}").copy_(torch.from_numpy(arr))
    return m


@pytest.mark.parametrize("mode,H,P", CELL_CASES)
def test_stack_matches_torch_autograd(mode, H, P):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    pr = _make_problem(mode, H, P, T=4, B=3, lengths=(4, 2, 3))
    gy, gh, gc = _loss_weights(pr, mode)
    lengths = torch.from_numpy(pr["lengths"])
    D = 2
    layers = [_torch_layer(mode, pr, k, H, P) for k in range(len(pr["params"]))]
    x = torch.from_numpy(pr["x"]).requires_grad_()
    h0 = torch.from_numpy(pr["h0"]).requires_grad_()
    c0 = None if pr["c0"] is None else torch.from_numpy(pr["c0"]).requires_grad_()
    inp, hs, cs = x, [], []
    for k, m in enumerate(layers):
        sl = slice(k * D, (k + 1) * D)
        hx = (h0[sl], c0[sl]) if c0 is not None else h0[sl]
        out, hn = m(pack_padded_sequence(inp, lengths, enforce_sorted=False), hx)
        y, _ = pad_packed_sequence(out, total_length=inp.shape[0])
        if c0 is not None:
            hn, cn = hn
            cs.append(cn)
        hs.append(hn)
        inp = y * torch.from_numpy(pr["masks"][k]) if k < len(layers) - 1 else y
    h_n = torch.cat(hs)
    loss = (inp * torch.from_numpy(gy)).sum() + (h_n * torch.from_numpy(gh)).sum()
    if c0 is not None:
        loss = loss + (torch.cat(cs) * torch.from_numpy(gc)).sum()
    loss.backward()

    ry, rh, rc, _ = _forward(mode, pr)
    np.testing.assert_allclose(ry, inp.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(rh, h_n.detach().numpy(), rtol=0, atol=1e-12)
    grads = _analytic(mode, pr, gy, gh, gc)
    np.testing.assert_allclose(grads["x"], x.grad.numpy(), rtol=0, atol=1e-11)
    np.testing.assert_allclose(grads["h0"], h0.grad.numpy(), rtol=0, atol=1e-11)
    if c0 is not None:
        np.testing.assert_allclose(rc, torch.cat(cs).detach().numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(grads["c0"], c0.grad.numpy(), rtol=0, atol=1e-11)
    for k, m in enumerate(layers):
        for d in range(D):
            for name in pr["params"][k][d]:
                tg = getattr(m, f"{_NAMES[name]}_l0{'_reverse' if d else ''}").grad.numpy()
                np.testing.assert_allclose(grads[f"l{k}d{d}.{name}"], tg, rtol=0, atol=1e-11,
                                           err_msg=f"layer {k} dir {d} {name}")


def test_reverse_padded_is_its_own_inverse():
    x = np.arange(4 * 3).reshape(4, 3, 1).astype(float)
    lengths = [4, 1, 2]
    r = reference.reverse_padded(x, lengths)
    assert r[:, 0, 0].tolist() == [9, 6, 3, 0]
    assert r[:, 1, 0].tolist() == [1, 4, 7, 10]      # length 1: unchanged
    assert r[:, 2, 0].tolist() == [5, 2, 8, 11]      # reversed within 2, padding in place
    np.testing.assert_array_equal(reference.reverse_padded(r, lengths), x)


def test_padded_steps_emit_zero_and_keep_state():
    pr = _make_problem("LSTM", 3, 0, T=4, B=2, lengths=(4, 2), L=1)
    y, h, c, _ = _forward("LSTM", pr)
    assert np.all(y[2:, 1] == 0)
    short = _make_problem("LSTM", 3, 0, T=4, B=2, lengths=(4, 2), L=1)
    short["x"] = short["x"][:2, 1:]
    short["h0"], short["c0"], short["lengths"] = short["h0"][:, 1:], short["c0"][:, 1:], None
    ys, hs, cs, _ = _forward("LSTM", short)
    np.testing.assert_allclose(h[:, 1], hs[:, 0], atol=1e-15)   # both directions
    np.testing.assert_allclose(c[:, 1], cs[:, 0], atol=1e-15)
    np.testing.assert_allclose(y[:2, 1], ys[:, 0], atol=1e-15)
