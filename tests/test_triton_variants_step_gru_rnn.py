"""``backend="triton-step"`` on the GRU, LayerNorm GRU and RNN variants (issue 14: zoneout,
resets) against the float64 composite layer: outputs, h_n and every gradient (x, h0, all
weights incl. the LayerNorm gains), through the variant op and autograd. Interpreter, tiny odd
sizes (see test_triton_variants_step.py for the LSTM)."""

import pytest
import torch

from conftest import assert_rel_close
from fusedrnn.layer_config import LayerConfig
from fusedrnn.ops import composite
from fusedrnn.ops.variant_layer import starts_from


def _problem(cfg, T, B, In, H, lengths, resets, keep, seed):
    gen = torch.Generator().manual_seed(seed)
    D, G = cfg.directions, cfg.gates
    x = torch.randn(T, B, In, generator=gen)
    h0 = torch.randn(D, B, H, generator=gen) * 0.5
    shapes = {"w_ih": (G * H, In), "w_hh": (G * H, H), "b_ih": (G * H,), "b_hh": (G * H,),
              "ln_ih": (G * H,), "ln_hh": (G * H,)}
    weights = []
    for _ in range(D):
        for name in cfg.weight_names:
            w = torch.randn(shapes[name], generator=gen) * 0.5
            weights.append(1.0 + 0.6 * w if name.startswith("ln_") else w)
    lengths = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    resets = None if resets is None else torch.tensor(resets, dtype=torch.bool)
    if keep == "binary":
        keep = (torch.rand(D, T, B, H, generator=gen) < 0.5).float()
    elif keep == "fraction":
        keep = torch.rand(D, T, B, H, generator=gen)
    starts = starts_from(resets, lengths, T, B, D, "cpu")
    cot = [torch.randn(T, B, D * H, generator=gen), torch.randn(D, B, H, generator=gen)]
    return x, lengths, h0, weights, starts, keep, cot


def check(cfg, T, B, In, H, lengths=None, resets=None, keep=None, seed=0, dtype=torch.float32,
          backend="triton-step"):
    x, lengths, h0, weights, starts, keep, cot = _problem(cfg, T, B, In, H, lengths, resets,
                                                          keep, seed)
    leaves = [t.to(dtype).requires_grad_() for t in [x, h0, *weights]]
    y, h_n, _, _ = torch.ops.fusedrnn.variant_layer_forward(
        leaves[0], lengths, leaves[1], None, leaves[2:], starts, keep, cfg.mode, backend,
        cfg.bidirectional, cfg.has_bias, cfg.layer_norm, cfg.has_resets)
    got = [y, h_n] + list(torch.autograd.grad([y, h_n], leaves, [c.to(dtype) for c in cot]))
    ref_leaves = [t.double().requires_grad_() for t in [x, h0, *weights]]
    ry, rh, _ = composite.layer(cfg, ref_leaves[0], lengths, ref_leaves[1], None,
                                ref_leaves[2:], starts, keep)
    want = [ry, rh] + list(torch.autograd.grad([ry, rh], ref_leaves, [c.double() for c in cot]))
    names = ["y", "h_n", "dx", "dh0"] + [f"d{n}[{k}]" for k in range(cfg.directions)
                                          for n in cfg.weight_names]
    for name, a, b in zip(names, got, want):
        assert_rel_close(a.double(), b.detach(), dtype, f"{cfg.mode} {name}")


MODES = ["GRU", "RNN_TANH", "RNN_RELU"]


def _cfg(mode, layer_norm=False, bidirectional=True, bias=True, resets=False, zoneout=False):
    return LayerConfig(mode, bidirectional, bias, False, layer_norm, resets, zoneout)


@pytest.mark.parametrize("mode", MODES + ["LN_GRU"])
def test_resets_and_variable_lengths(mode):
    ln = mode == "LN_GRU"
    cfg = _cfg("GRU" if ln else mode, layer_norm=ln, resets=True)
    resets = [[True, False, False], [False, True, False], [False, True, True],
              [False, False, True], [True, False, False]]      # t=0, consecutive, last step
    check(cfg, T=5, B=3, In=5, H=5, lengths=[5, 4, 2], resets=resets)


@pytest.mark.parametrize("keep", ["binary", "fraction"])
@pytest.mark.parametrize("mode", MODES + ["LN_GRU"])
def test_zoneout(mode, keep):
    ln = mode == "LN_GRU"
    cfg = _cfg("GRU" if ln else mode, layer_norm=ln, zoneout=True, resets=True)
    check(cfg, T=4, B=2, In=3, H=7, resets=[[False, False], [False, True], [False, False],
                                           [True, False]], keep=keep, seed=1)


@pytest.mark.parametrize("shape", [dict(T=1, B=1, In=5, H=3), dict(T=3, B=1, In=2, H=5)])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_gru_odd_sizes(shape, bias):
    check(_cfg("GRU", layer_norm=True, bias=bias, bidirectional=False), **shape, seed=2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layer_norm_gru_low_precision(dtype):
    check(_cfg("GRU", layer_norm=True, zoneout=True), T=3, B=2, In=3, H=5, keep="fraction",
          dtype=dtype, seed=3)
