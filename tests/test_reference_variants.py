"""The float64 oracle of the cell variants (issue 14): LayerNorm cells, zoneout, resets.

(a) the hand-written BPTT of ``reference.layer_forward``/``layer_backward`` against central
    finite differences, every input and every weight (the LN gains and ``ln_cell_b`` too);
(b) backend ``"reference"`` through ``torch.ops.fusedrnn.variant_layer_forward`` + autograd
    against backend ``"torch"`` (the composite), float64;
(c) resets: a sequence with resets equals its episodes run one by one (both directions,
    outputs and every gradient);
plus: without variants the new code paths change nothing, bit for bit.

Sizes are tiny and odd (T ≤ 4, B ≤ 3, H 3 or 5, In 2) so every case runs in well under a second.
"""

import numpy as np
import pytest
import torch

from conftest import assert_rel_close
from fusedrnn import reference
from fusedrnn.layer_config import GATES, LayerConfig
from fusedrnn.ops.variant_layer import run_variant_layer, starts_from

F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# Problems: float64 NumPy parameters in the reference's dict form, and the variant tensors.

def _params(mode, H, In, D, *, layer_norm, bias, rng):
    """One dict per direction; LN gains near 1 and a nonzero ``ln_cell_b`` so every weight
    matters to the loss (a gain of exactly 1 would hide a missing factor γ)."""
    G = GATES[mode]
    out = []
    for _ in range(D):
        p = {"w_ih": rng.normal(0, 0.6, (G * H, In)), "w_hh": rng.normal(0, 0.6, (G * H, H))}
        if bias:
            p["b_ih"], p["b_hh"] = rng.normal(0, 0.3, G * H), rng.normal(0, 0.3, G * H)
        if layer_norm:
            p["ln_ih"], p["ln_hh"] = rng.normal(1, 0.3, G * H), rng.normal(1, 0.3, G * H)
            if mode == "LSTM":
                p["ln_cell_w"], p["ln_cell_b"] = rng.normal(1, 0.3, H), rng.normal(0, 0.3, H)
        out.append(p)
    return out


def _starts(resets, lengths, T, B, D):
    """``starts [D, T, B]`` bool NumPy, built by the op's own rule from ``resets`` (list of
    (t, b)) and ``lengths``."""
    r = None
    if resets is not None:
        r = torch.zeros(T, B, dtype=torch.bool)
        for t, b in resets:
            r[t, b] = True
    lens = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    return starts_from(r, lens, T, B, D, "cpu").numpy(), r


def _keep(kind, D, T, B, H, rng):
    """Zoneout masks ``[D, T, B, H]``: ``"mask"`` 0/1 as in training, ``"eval"`` every entry
    p = 0.3 as in eval mode (fractional: both paths of the blend carry gradient), or None."""
    if kind is None:
        return None
    if kind == "mask":
        return rng.choice([0.0, 1.0], size=(D, T, B, H))
    return np.full((D, T, B, H), np.float64(np.float32(0.3)))   # what the op's float32 mask holds


def _problem(mode, *, H=3, In=2, T=4, B=3, D=1, layer_norm=False, bias=True, lengths=None,
             resets=None, keep=None, seed=0):
    rng = np.random.default_rng(seed)
    starts, _ = _starts(resets, lengths, T, B, D)
    pr = dict(
        cell=reference.cell_for(mode, layer_norm),
        x=rng.normal(size=(T, B, In)),
        lengths=None if lengths is None else np.array(lengths),
        h0=rng.normal(0, 0.5, (D, B, H)),
        c0=rng.normal(0, 0.5, (D, B, H)) if mode == "LSTM" else None,
        params=_params(mode, H, In, D, layer_norm=layer_norm, bias=bias, rng=rng),
        starts=starts if resets is not None else None,
        keep=_keep(keep, D, T, B, H, rng),
    )
    y, h, c, _ = _forward(pr)
    pr["gy"], pr["gh"] = rng.normal(size=y.shape), rng.normal(size=h.shape)
    pr["gc"] = None if c is None else rng.normal(size=c.shape)
    return pr


def _forward(pr):
    return reference.layer_forward(pr["cell"], pr["x"], pr["lengths"], pr["h0"], pr["c0"],
                                   pr["params"], starts=pr["starts"], keep=pr["keep"])


def _loss(pr):
    y, h, c, _ = _forward(pr)
    total = (y * pr["gy"]).sum() + (h * pr["gh"]).sum()
    return total + ((c * pr["gc"]).sum() if c is not None else 0.0)


def _leaves(pr):
    """Every array the loss depends on, by name."""
    yield "x", pr["x"]
    yield "h0", pr["h0"]
    if pr["c0"] is not None:
        yield "c0", pr["c0"]
    for d, p in enumerate(pr["params"]):
        for name, arr in p.items():
            yield f"d{d}.{name}", arr


def _analytic(pr):
    *_, cache = _forward(pr)
    dx, dh0, dc0, dparams = reference.layer_backward(cache, pr["gy"], pr["gh"], pr["gc"])
    out = {"x": dx, "h0": dh0}
    if dc0 is not None:
        out["c0"] = dc0
    for d, g in enumerate(dparams):
        out.update({f"d{d}.{name}": arr for name, arr in g.items()})
    return out


# ---------------------------------------------------------------------------------------------
# (a) Finite differences.

FD_CASES = {  # id: (mode, problem keywords)
    "ln_lstm": ("LSTM", dict(layer_norm=True)),
    "ln_lstm_nobias_H5": ("LSTM", dict(layer_norm=True, bias=False, H=5, B=2)),
    "ln_gru": ("GRU", dict(layer_norm=True)),
    "ln_gru_bidir_varlen": ("GRU", dict(layer_norm=True, D=2, lengths=(4, 3, 1))),
    "ln_lstm_bidir_varlen": ("LSTM", dict(layer_norm=True, D=2, lengths=(4, 2, 2))),
    "zoneout_mask_lstm": ("LSTM", dict(keep="mask")),
    "zoneout_mask_gru_bidir": ("GRU", dict(keep="mask", D=2)),
    "zoneout_eval_lstm_bidir": ("LSTM", dict(keep="eval", D=2)),
    "zoneout_eval_ln_gru": ("GRU", dict(keep="eval", layer_norm=True)),
    "zoneout_eval_tanh_varlen": ("RNN_TANH", dict(keep="eval", lengths=(4, 3, 2))),
    # resets at t = 0 (no-op beside the first step), at the last step, on consecutive steps
    "resets_first_last_lstm": ("LSTM", dict(resets=[(0, 0), (3, 1), (3, 2)])),
    "resets_consecutive_gru_bidir": ("GRU", dict(resets=[(1, 0), (2, 0), (3, 1)], D=2)),
    "resets_ln_lstm_bidir_varlen": ("LSTM", dict(layer_norm=True, D=2, lengths=(4, 3, 2),
                                                resets=[(1, 0), (2, 0), (2, 1), (3, 1)])),
    "resets_zoneout_tanh_bidir_varlen": ("RNN_TANH", dict(D=2, lengths=(4, 4, 2), keep="eval",
                                                         resets=[(3, 0), (1, 1), (1, 2)])),
    "all_ln_gru_bidir_varlen": ("GRU", dict(layer_norm=True, D=2, lengths=(4, 3, 3), keep="mask",
                                           resets=[(2, 0), (1, 1), (2, 1)])),
}


@pytest.mark.parametrize("case", list(FD_CASES))
def test_backward_matches_finite_differences(case):
    mode, kw = FD_CASES[case]
    pr = _problem(mode, **kw)
    analytic = _analytic(pr)
    names = [name for name, _ in _leaves(pr)]
    assert sorted(names) == sorted(analytic), "a gradient for every input and weight"
    eps = 1e-6
    for name, arr in _leaves(pr):
        numeric = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            saved = arr[idx]
            arr[idx] = saved + eps
            up = _loss(pr)
            arr[idx] = saved - eps
            down = _loss(pr)
            arr[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        # As tests/test_reference.py: central differences carry O(eps²) ≈ 1e-12 truncation and
        # ~1e-10 cancellation error (loss ~1, float64 roundoff 1e-16 over eps 1e-6).
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)
        assert np.abs(analytic[name]).max() > 0, f"{name}: the loss does not depend on it"


# ---------------------------------------------------------------------------------------------
# The classic oracle is untouched: starts that only mark each row's first step (what the op
# builds from lengths alone) and an all-zero keep mask reproduce starts=None/keep=None exactly.

@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_RELU"])
def test_classic_paths_bit_identical(mode):
    pr = _problem(mode, D=2, lengths=(4, 3, 1))
    classic = _forward(pr)
    grads = _analytic(pr)
    pr["starts"], _ = _starts([], (4, 3, 1), 4, 3, 2)
    pr["keep"] = np.zeros((2, 4, 3, 3))
    for a, b in zip(classic[:3], _forward(pr)[:3]):
        assert (a is None and b is None) or np.array_equal(a, b)
    for name, g in _analytic(pr).items():
        assert np.array_equal(g, grads[name]), name


def test_cell_for():
    assert reference.cell_for("GRU") is reference.CELLS["GRU"]
    assert reference.cell_for("LSTM", True) is reference.ln_lstm_cell
    assert reference.cell_for("GRU", True) is reference.ln_gru_cell
    with pytest.raises(ValueError, match="layer_norm"):
        reference.cell_for("RNN_TANH", True)


# ---------------------------------------------------------------------------------------------
# (b) Backend "reference" through the variant op vs backend "torch" (the composite).

OPTIONS = {  # id: (layer_norm, bidirectional, has_bias, lengths, resets, zoneout kind)
    "ln": (True, False, True, None, None, None),
    "resets_bidir_varlen": (False, True, True, (4, 3, 2), [(0, 1), (2, 0), (3, 0), (1, 2)], None),
    "zoneout_mask_bidir": (False, True, True, None, None, "mask"),
    "all_eval_nobias": (True, True, False, (4, 4, 1), [(2, 0), (3, 1)], "eval"),
    "resets_zoneout_mask": (True, False, True, (3, 3, 2), [(1, 0), (2, 0), (1, 2)], "mask"),
}


def _torch_problem(mode, option, seed=3):
    layer_norm, bidir, bias, lengths, resets, zoneout = OPTIONS[option]
    layer_norm = layer_norm and mode in ("LSTM", "GRU")
    cfg = LayerConfig(mode, bidir, bias, False, layer_norm, resets is not None, zoneout is not None)
    T, B, In, H, D = 4, 3, 2, 3, cfg.directions
    rng = np.random.default_rng(seed)
    params = _params(mode, H, In, D, layer_norm=layer_norm, bias=bias, rng=rng)
    weights = [torch.tensor(p[k]) for p in params for k in cfg.weight_names]
    x = torch.tensor(rng.normal(size=(T, B, In)))
    h0 = torch.tensor(rng.normal(0, 0.5, (D, B, H)))
    c0 = torch.tensor(rng.normal(0, 0.5, (D, B, H))) if mode == "LSTM" else None
    _, r = _starts(resets, lengths, T, B, D)
    keep = _keep(zoneout, D, T, B, H, rng)
    keep = None if keep is None else torch.tensor(keep, dtype=torch.float32)   # the op's dtype
    lens = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    return cfg, dict(x=x, lengths=lens, h0=h0, c0=c0, weights=weights, resets=r, keep=keep), rng


def _run(cfg, backend, pb, cotangents=None):
    """``(outputs, gradients of Σ outputs ⊙ cotangents wrt x, h0, *weights, [c0])``; only the
    outputs when ``cotangents`` is None."""
    leaves = [pb["x"], pb["h0"], *pb["weights"]] + ([pb["c0"]] if pb["c0"] is not None else [])
    leaves = [t.clone().requires_grad_() for t in leaves]
    x, h0, *rest = leaves
    n_w = len(pb["weights"])
    c0 = rest[n_w] if pb["c0"] is not None else None
    outs = run_variant_layer(cfg, backend, x, pb["lengths"], h0, c0, rest[:n_w],
                             resets=pb["resets"], keep=pb["keep"])
    outs = [o for o in outs if o is not None]
    if cotangents is None:
        return outs, None
    loss = sum((o * g).sum() for o, g in zip(outs, cotangents))
    return outs, torch.autograd.grad(loss, leaves)


# LayerNorm alone is no variant of the Elman cells (they have none), so "ln" is LSTM/GRU only.
BACKEND_CASES = [(mode, option) for mode in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
                 for option in OPTIONS if option != "ln" or mode in ("LSTM", "GRU")]


@pytest.mark.parametrize("mode,option", BACKEND_CASES)
def test_reference_backend_matches_composite(mode, option):
    cfg, pb, rng = _torch_problem(mode, option)
    assert cfg.is_variant
    ref_outs, _ = _run(cfg, "torch", pb)
    cotangents = [torch.tensor(rng.normal(size=o.shape)) for o in ref_outs]
    want, want_grads = _run(cfg, "torch", pb, cotangents)
    got, got_grads = _run(cfg, "reference", pb, cotangents)
    # Both run the same equations in float64 and differ only in summation order (~1e-16 per
    # op, a few dozen ops deep over T = 4 steps: observed ≤ 4e-15); the table's float64 bound
    # (1e-9) is the float64-agreement bound used for every oracle comparison.
    names = ["y", "h_n", "c_n"]
    for name, a, b in zip(names, got, want):
        assert_rel_close(a, b, F64, name)
    names = ["dx", "dh0"] + [f"d{k}" for k in range(len(pb["weights"]))] + ["dc0"]
    for name, a, b in zip(names, got_grads, want_grads):
        assert_rel_close(a, b, F64, name)


# ---------------------------------------------------------------------------------------------
# (c) A reset splits a row into independent episodes.

def _episodes(row_resets, length):
    """``[(t0, t1), ...]``: the episodes of a row of ``length`` valid steps."""
    cuts = sorted({0, *(t for t in row_resets if t < length)}) + [length]
    return list(zip(cuts[:-1], cuts[1:]))


@pytest.mark.parametrize("mode,layer_norm,zoneout", [
    ("LSTM", True, "eval"), ("GRU", False, "mask"), ("RNN_TANH", False, None)])
def test_resets_equal_separate_episodes(mode, layer_norm, zoneout):
    T, B, H, D = 4, 3, 3, 2
    lengths = (4, 4, 3)
    resets = {0: [2], 1: [1, 2], 2: [0, 1]}   # mid-row, consecutive (one-step episode), t = 0
    pr = _problem(mode, D=D, layer_norm=layer_norm, lengths=lengths, keep=zoneout,
                  resets=[(t, b) for b, ts in resets.items() for t in ts])
    y, h_n, c_n, _ = _forward(pr)
    full = _analytic(pr)
    has_c = pr["c0"] is not None

    sum_w = {k: 0.0 for k in full if k.startswith("d")}
    for b in range(B):
        dx_row = np.zeros_like(pr["x"][:, b])
        dh0_row, dc0_row = 0.0, 0.0
        eps = _episodes(resets[b], lengths[b])
        for e, (t0, t1) in enumerate(eps):
            # The forward direction's final state belongs to the last episode, the reverse
            # direction's (which ends at t = 0) to the first.
            owns = np.array([e == len(eps) - 1, e == 0][:D], dtype=np.float64)[:, None, None]
            ep = dict(pr, x=pr["x"][t0:t1, b:b + 1], lengths=None, h0=pr["h0"][:, b:b + 1],
                      c0=pr["c0"][:, b:b + 1] if has_c else None, starts=None,
                      keep=None if pr["keep"] is None else pr["keep"][:, t0:t1, b:b + 1],
                      gy=pr["gy"][t0:t1, b:b + 1], gh=owns * pr["gh"][:, b:b + 1],
                      gc=owns * pr["gc"][:, b:b + 1] if has_c else None)
            y_e, h_e, c_e, _ = _forward(ep)
            _assert_close(y[t0:t1, b:b + 1], y_e, f"y row {b} episode {e}")
            for d in range(D):
                if owns[d]:
                    _assert_close(h_n[d, b], h_e[d, 0], f"h_n row {b} direction {d}")
                    if has_c:
                        _assert_close(c_n[d, b], c_e[d, 0], f"c_n row {b} direction {d}")
            g = _analytic(ep)
            dx_row[t0:t1] = g["x"][:, 0]
            dh0_row = dh0_row + g["h0"][:, 0]
            if has_c:
                dc0_row = dc0_row + g["c0"][:, 0]
            for k in sum_w:
                sum_w[k] = sum_w[k] + g[k]
        assert not full["x"][lengths[b]:, b].any(), "padding gets no gradient"
        _assert_close(full["x"][:lengths[b], b], dx_row[:lengths[b]], f"dx row {b}")
        _assert_close(full["h0"][:, b], dh0_row, f"dh0 row {b}")
        if has_c:
            _assert_close(full["c0"][:, b], dc0_row, f"dc0 row {b}")
    for k, v in sum_w.items():
        _assert_close(full[k], v, k)


def _assert_close(a, b, what):
    # Same equations; the episodes run with B = 1, so only summation order differs.
    assert_rel_close(torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b)), F64, what)
