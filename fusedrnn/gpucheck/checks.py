"""Phases c and d: warm-up runs and the correctness checks of one fused backend.

Every check builds the fusedrnn module on the device in the item's dtype and an oracle, the
same module on ``backend="reference"`` (NumPy float64, hand-written BPTT) holding the very
same low-precision weights, feeds both the same low-precision inputs (and initial states) and
the same random cotangents, and compares outputs, ``h_n``, ``c_n`` and every gradient (input,
``h0``, ``c0``, each parameter) by ``‖out − ref‖ / ‖ref‖`` against the test suite's table
(:mod:`fusedrnn.tolerances`). Library outputs are NaN-poisoned, so an unwritten element fails.
"""

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from .. import allocation, layernorm_modules, modules
from ..benchmark import DTYPES
from ..tolerances import rel_err, tolerance
from .plan import MODE
from .records import Skip

_CLASS = {"lstm": modules.LSTM, "lstm_proj": modules.LSTM, "gru": modules.GRU,
          "rnn_tanh": modules.RNN, "rnn_relu": modules.RNN,
          "ln_lstm": layernorm_modules.LayerNormLSTM, "ln_gru": layernorm_modules.LayerNormGRU,
          "lstm_zr": modules.LSTM, "gru_zr": modules.GRU}
ZONEOUT = 0.3     # the "_zr" cells' zoneout, run in eval mode (the expectation mask)


def _kwargs(cell, shape, bidirectional):
    kw = dict(bidirectional=bidirectional)
    if cell.endswith("_zr"):
        kw["zoneout"] = ZONEOUT
    if cell == "lstm_proj":
        kw["proj_size"] = shape["P"]
    if cell.startswith("rnn"):
        kw["nonlinearity"] = cell.split("_")[1]
    return kw


class Problem:
    """One configuration's modules, inputs and cotangents, built from a seed so the oracle and
    every backend see identical values."""

    def __init__(self, cell, dtype, bidirectional, packed, shape, device, seed=0):
        self.cell, self.dtype, self.device = cell, DTYPES[dtype], device
        self.shape, self.packed, self.bidirectional = shape, packed, bidirectional
        T, B, In, H = shape["T"], shape["B"], shape.get("In", shape["H"]), shape["H"]
        D = 2 if bidirectional else 1
        Hr = shape.get("P", H) if cell == "lstm_proj" else H
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        with torch.device("cpu"):
            base = _CLASS[cell](In, H, **_kwargs(cell, shape, bidirectional), backend="reference")
        # Round once to the dtype: what the kernel holds is what the oracle holds.
        self.state = {k: v.to(self.dtype) for k, v in base.state_dict().items()}
        self.x = torch.randn(T, B, In, generator=g).to(self.dtype)
        self.h0 = (0.5 * torch.randn(D, B, Hr, generator=g)).to(self.dtype)
        self.c0 = (0.5 * torch.randn(D, B, H, generator=g)).to(self.dtype) \
            if MODE[cell] == "LSTM" else None
        self.lengths = None
        if packed:
            self.lengths = torch.randint(1, T + 1, (B,), generator=g)
            self.lengths[torch.randint(0, B, (1,), generator=g)] = T
        # "_zr" cells: episode resets at 20% of the (t, b) positions, in the caller's order.
        self.resets = (torch.rand(T, B, generator=g) < 0.2) if cell.endswith("_zr") else None
        self.seed = seed
        self.In, self.H = In, H

    def module(self, backend, dtype=None, device=None):
        dtype, device = dtype or self.dtype, device or self.device
        try:
            m = _CLASS[self.cell](self.In, self.H, backend=backend,
                                  **_kwargs(self.cell, self.shape, self.bidirectional))
        except ImportError as exc:
            # A CuPy backend without CuPy: expected on the CPU; on a GPU machine it is an error
            # (the CuPy backends would go unchecked).
            if device.type != "cuda":
                raise Skip(f"{str(exc).split(';')[0]} (no GPU here)") from exc
            raise
        m.load_state_dict({k: v.to(dtype) for k, v in self.state.items()})
        if self.resets is not None:
            m.eval()       # zoneout's expectation: the same mask for the oracle and the GPU
        return m.to(device, dtype)

    def leaves(self, dtype, device):
        # copy=True: a fresh leaf each run, even where device and dtype already match (else
        # the problem's own tensors would become leaves and accumulate gradients across runs).
        tensors = [self.x, self.h0] + ([self.c0] if self.c0 is not None else [])
        return [t.to(device, dtype, copy=True).requires_grad_() for t in tensors]

    def forward(self, module, dtype, device):
        """``(leaves, {name: output}, loss)``: the module on fresh leaves, and the seeded loss
        ``Σ ⟨output, cotangent⟩`` over every output. Cotangents are rounded to the problem's
        dtype first, so the oracle gets the very values the kernel gets."""
        leaves = self.leaves(dtype, device)
        x, hx = leaves[0], (tuple(leaves[1:]) if len(leaves) == 3 else leaves[1])
        inp = x if self.lengths is None else \
            pack_padded_sequence(x, self.lengths, enforce_sorted=False)
        out, hidden = module(inp, hx) if self.resets is None else \
            module(inp, hx, resets=self.resets)
        outs = {"output": out.data if isinstance(out, PackedSequence) else out}
        if isinstance(hidden, tuple):
            outs.update(h_n=hidden[0], c_n=hidden[1])
        else:
            outs["h_n"] = hidden
        g = torch.Generator().manual_seed(self.seed + 1)
        loss = sum((o * torch.randn(o.shape, generator=g).to(self.dtype).to(o)).sum()
                   for o in outs.values())
        return leaves, outs, loss

    def run(self, module, dtype, device, backward=True):
        """Forward (and backward of the seeded loss): ``({name: tensor}, {name: grad})``."""
        if not backward:
            with torch.no_grad():
                _, outs, _ = self.forward(module, dtype, device)
            return outs, {}
        leaves, outs, loss = self.forward(module, dtype, device)
        loss.backward()
        grads = {"input": leaves[0].grad, "h0": leaves[1].grad}
        if len(leaves) == 3:
            grads["c0"] = leaves[2].grad
        grads.update({n: p.grad for n, p in module.named_parameters()})
        return {k: v.detach() for k, v in outs.items()}, grads


_ORACLE = {}   # (cell, dtype, bidirectional, packed, shape, seed) -> (outs, grads), per worker


def oracle(problem):
    key = (problem.cell, str(problem.dtype), problem.bidirectional, problem.packed,
           tuple(sorted(problem.shape.items())), problem.seed)
    if key not in _ORACLE:
        _ORACLE.clear()        # items of one group share a problem; keep only the latest
        ref = problem.module("reference", torch.float64, torch.device("cpu"))
        _ORACLE[key] = problem.run(ref, torch.float64, torch.device("cpu"))
    return _ORACLE[key]


def compare(got, want, dtype, mode):
    """``(passed, {name: relative error})`` over outputs and gradients; NaN/inf or a missing
    gradient fails."""
    errors, passed = {}, True
    tol = tolerance(dtype, mode)
    for name, ref in want.items():
        out = got.get(name)
        if out is None:
            errors[name] = "missing"
            passed = False
            continue
        if out.shape != ref.shape:
            errors[name] = f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
            passed = False
            continue
        if not torch.isfinite(out).all():
            errors[name] = "non-finite"
            passed = False
            continue
        errors[name] = float(f"{rel_err(out, ref):.3e}")
        passed &= errors[name] <= tol
    return passed, errors


def _require_supported(module, device, strict=True):
    """The backend that runs ``module`` on ``device``. A refusal is a skip on the CPU (and for
    warm-ups), but a failure of a check on a GPU: there every checked configuration is one the
    backend documents as supported."""
    try:
        return module.resolved_backend(device)
    except ValueError as exc:
        if strict and device.type == "cuda":
            raise Refused(str(exc)) from exc
        raise Skip(str(exc)) from exc


class Refused(Exception):
    """A backend refused a configuration it documents as supported."""


def _prepare(item, device, shape=None, backend=None, strict=True):
    """``(problem, module, backend that runs it)`` for the item's configuration. A refusal
    raises Skip, or on a GPU (``strict``) Refused, which ``run`` records as a failure."""
    problem = Problem(item["cell"], item["dtype"], item["bidirectional"], item["packed"],
                      shape or item["shape"], device)
    module = problem.module(backend or item["backend"])
    return problem, module, _require_supported(module, device, strict)


def parity(item, device, backend=None, shape=None, train=True):
    """The backend against the float64 oracle: ``(status, detail)``; ``detail`` holds the
    worst-case relative error per tensor, the tolerance and the backend that ran."""
    problem, module, ran = _prepare(item, device, shape, backend)
    module.train(train and problem.resets is None)   # "_zr" cells stay in eval (see module)
    want_outs, want_grads = oracle(problem)
    allocation.POISON = True
    got_outs, got_grads = problem.run(module, problem.dtype, device)
    ok_out, err_out = compare(got_outs, want_outs, problem.dtype, MODE[item["cell"]])
    ok_grad, err_grad = compare(got_grads, want_grads, problem.dtype, MODE[item["cell"]])
    worst = max([v for v in {**err_out, **err_grad}.values() if isinstance(v, float)], default=0)
    detail = dict(ran=ran, tolerance=tolerance(problem.dtype, MODE[item["cell"]]),
                  worst=worst, errors={**err_out, **err_grad})
    return ("pass" if ok_out and ok_grad else "fail"), detail


def warm(item, device):
    """One forward and backward, unchecked: compiles (and caches on disk) the kernels a later
    phase runs at this configuration."""
    problem, module, ran = _prepare(item, device, strict=False)
    problem.run(module, problem.dtype, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return "pass", {"ran": ran}


def determinism(item, device):
    """Two runs of the same forward and backward must agree bit for bit."""
    problem, module, ran = _prepare(item, device)
    runs = []
    for _ in range(2):
        module.zero_grad(set_to_none=True)
        outs, grads = problem.run(module, problem.dtype, device)
        runs.append({**outs, **{f"grad {k}": v.clone() for k, v in grads.items()}})
    differ = [k for k in runs[0] if not torch.equal(runs[0][k], runs[1][k])]
    return ("fail" if differ else "pass"), dict(ran=ran, differ=differ, compared=len(runs[0]))


def _gradient_penalty_grads(problem, module, dtype, device):
    """Parameter gradients of ``‖∂L/∂θ‖²`` (a gradient penalty: double backward through the
    layer), with ``L`` the problem's seeded loss."""
    _, _, loss = problem.forward(module, dtype, device)
    params = [p for _, p in module.named_parameters()]
    grads = torch.autograd.grad(loss, params, create_graph=True)
    penalty = sum((gr.float() ** 2).sum() for gr in grads)
    second = torch.autograd.grad(penalty, params)
    return {n: s for (n, _), s in zip(module.named_parameters(), second)}


def double_backward(item, device):
    """A gradient penalty (``create_graph=True``, then backward) against the float64 oracle.
    Backend ``"torch"`` on CUDA is cuDNN, which refuses double backward exactly as for
    ``torch.nn``: recorded as a skip with cuDNN's words, any other error fails."""
    problem, module, ran = _prepare(item, device)
    ref = problem.module("reference", torch.float64, torch.device("cpu"))
    want = _gradient_penalty_grads(problem, ref, torch.float64, torch.device("cpu"))
    try:
        got = _gradient_penalty_grads(problem, module, problem.dtype, device)
    except RuntimeError as exc:
        if ran == "torch" and device.type == "cuda" and "CuDNN" in str(exc):
            raise Skip(f"backend 'torch' is cuDNN here, which refuses double backward as for "
                       f"torch.nn: {exc}"[:300]) from exc
        raise
    ok, errors = compare(got, want, problem.dtype, MODE[item["cell"]])
    worst = max([v for v in errors.values() if isinstance(v, float)], default=0)
    return ("pass" if ok else "fail"), dict(ran=ran, worst=worst, errors=errors,
                                            tolerance=tolerance(problem.dtype, MODE[item["cell"]]))


def eval_backward(item, device):
    """Backward with the module in eval mode (cuDNN refuses it), checked like ``parity``."""
    return parity(item, device, train=False)


# ----------------------------------------------------------------------- size limits

def _limit_hidden(form, cell, dtype, bidirectional, B, device):
    """The documented largest hidden size of ``form`` for this cell and dtype on ``device``."""
    mode, D = MODE[cell], 2 if bidirectional else 1
    if form == "batch_tiled":
        from ..backends.triton_persistent import _forms
        from ..kernels.triton.persistent_common import dot_key

        return _forms(mode)[0].MAX_HIDDEN[dot_key(dtype)]
    if device.type != "cuda":
        raise Skip(f"the {form} limit is a GPU's (its SM count / shared memory)")
    if form == "split":
        from ..kernels.triton.split_common import SLICE_WIDTH

        return SLICE_WIDTH * torch.cuda.get_device_properties(device).multi_processor_count // D
    from ..kernels.cuda import persistent_launch as pl

    sms, smem = pl.device_limits(device)
    return pl.max_hidden(mode, B, D, dtype, sms, smem)


def limit(item, device):
    """At the limit the form must run and match the reference; just past it the batch-tiled
    form must hand over to the hidden-split form, and the others must refuse with a
    ValueError that names the limit."""
    from ..backends.triton_persistent import batch_tiled_fits

    form, at, cell = item["form"], item["at"], item["cell"]
    dtype = DTYPES[item["dtype"]]
    B = item["shape"]["B"]
    H = _limit_hidden(form, cell, dtype, item["bidirectional"], B, device)
    width = H if at == "limit" else H + 1
    # A small input width keeps the oracle's input projection cheap at wide H.
    shape = dict(item["shape"], In=32, H=width)
    if form == "batch_tiled":
        fits = batch_tiled_fits(MODE[cell], width, dtype, False)
        if fits != (at == "limit"):
            return "fail", dict(H=width, batch_tiled=fits,
                                message="the form choice disagrees with MAX_HIDDEN")
        status, detail = parity(item, device, shape=shape)
        return status, dict(detail, H=width, form="batch-tiled" if fits else "hidden-split")
    if at == "limit":
        status, detail = parity(item, device, shape=shape)
        return status, dict(detail, H=width)
    problem = Problem(cell, item["dtype"], item["bidirectional"], False, shape, device)
    module = problem.module(item["backend"])
    try:
        problem.run(module, dtype, device, backward=False)
    except ValueError as exc:
        named = "limit" in str(exc) or "largest hidden size" in str(exc)
        return ("pass" if named else "fail"), dict(H=width, message=str(exc)[:400])
    return "fail", dict(H=width, message="ran past its documented limit without a ValueError")


KINDS = {"parity": parity, "warm": warm, "determinism": determinism,
         "eval_backward": eval_backward, "double_backward": double_backward, "limit": limit}


def run(item, device):
    """``(status, detail)`` of a check item."""
    try:
        return KINDS[item["kind"]](item, device)
    except Refused as exc:
        return "fail", dict(message=f"refused a supported configuration: {exc}"[:400])
