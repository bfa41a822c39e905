"""What the GPU check runs: the work items of each phase, their shapes and time limits.

An *item* is a JSON-serialisable dict. The orchestrator hands items to worker processes in
*groups* (items that share a worker, e.g. one reference computation); every item still has its
own time limit, and a worker that hangs or dies costs only the item it was running.

Fields every item has (the record written for it repeats them): ``id`` (stable across runs, for
``--resume``), ``phase``, ``kind`` (what the worker does), ``backend``, ``cell``, ``dtype``,
``bidirectional``, ``packed``, ``shape`` (dict), ``limit_s``, ``group``.

The real run uses realistic shapes on the GPU; ``--dry-run`` the same items with tiny shapes on
the CPU (Triton interpreter), so the orchestration itself is tested where there is no GPU.
"""

from ..benchmark import Case

PHASES = ("env", "floors", "compile", "correctness", "timing")
FUSED = ("triton-step", "triton-persistent", "cupy-step", "cupy-persistent")
TRITON = ("triton-step", "triton-persistent")
CELLS = ("lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu")
DTYPES = ("fp32", "fp16", "bf16")
MODE = {"lstm": "LSTM", "lstm_proj": "LSTM", "gru": "GRU", "rnn_tanh": "RNN_TANH",
        "rnn_relu": "RNN_RELU", "ln_lstm": "LSTM", "ln_gru": "GRU", "lstm_zr": "LSTM",
        "gru_zr": "GRU"}
# The cell variants of issue 14, on the Triton backends only (the CuPy ones have no variant
# kernels): LayerNorm LSTM/GRU, and LSTM/GRU with zoneout (eval mode: the expectation mask, so
# the CPU oracle and the GPU see the same mask) and resets ("_zr"). triton-persistent checks
# both of its variant forms: hidden-split at the matrix's width (H=256 is past the batch-tiled
# variant kernels' limit) and batch-tiled at the small width (VARIANT_TILED_H).
VARIANT_CELLS = ("ln_lstm", "ln_gru", "lstm_zr", "gru_zr")
# The width the batch-tiled variant kernels fit in every dtype (the smallest of their
# MAX_HIDDEN tables; tests/test_gpucheck.py checks it against the tables).
VARIANT_TILED_H = 16

# Cumulative share of the budget by the end of each phase: a phase may start only before its
# share is spent, and what an earlier phase leaves unused rolls over. Correctness comes before
# timing because a wrong kernel's time means nothing.
PHASE_END = {"env": 0.05, "floors": 0.15, "compile": 0.32, "correctness": 0.65, "timing": 1.0}
# Per-item time limits (seconds). The compile phase has put every binary on disk by the time a
# check runs, so a check that takes longer than CHECK_S is stuck, not compiling; a warm-up
# compiles (measured on CPU: ~0.6 s per Triton kernel for sm_90, a few kernels per item).
WARM_S, CHECK_S, LIMIT_S, TIMING_S = 120, 45, 120, 60


def shapes(dry_run):
    """The correctness matrix's shape, with P (the LSTM projection) for ``lstm_proj``."""
    if dry_run:     # interpreter: tiny, odd sizes (H not a power of two, In != H)
        return dict(T=3, B=3, In=5, H=6, P=3)
    return dict(T=64, B=16, In=256, H=256, P=128)


def _item(phase, kind, group, limit_s, backend=None, cell=None, dtype=None, bidirectional=False,
          packed=False, shape=None, **extra):
    shape = dict(shape or {})
    if cell is not None and cell != "lstm_proj":
        shape.pop("P", None)
    parts = [phase, kind, backend, cell, dtype]
    if cell is not None:
        parts += ["bi" if bidirectional else "uni", "packed" if packed else "padded"]
    parts += [f"{k}{v}" for k, v in sorted(shape.items())]
    parts += [f"{k}={v}" for k, v in sorted(extra.items()) if k not in ("peaks",)]
    return dict(id="/".join(str(p) for p in parts if p is not None), phase=phase, kind=kind,
                backend=backend, cell=cell, dtype=dtype, bidirectional=bidirectional,
                packed=packed, shape=shape, limit_s=limit_s, group=group, **extra)


def env_items(dry_run):
    return [_item("env", "env", "env", 90)]


def floor_items(dry_run):
    items = [_item("floors", "matmul", "floors", 30, dtype=d) for d in ("bf16", "fp32")]
    items += [_item("floors", "hbm_copy", "floors", 30), _item("floors", "l2_read", "floors", 30),
              _item("floors", "launch_triton", "floors", 60),
              _item("floors", "launch_cupy", "floors", 60)]
    items += [_item("floors", f"barrier_{impl}", "floors", 60, programs=n)
              for impl in ("triton", "cuda") for n in (132, 264)]
    return items


def correctness_matrix(dry_run):
    """Every fused backend × cell × dtype × direction × input form at one shape (LSTM
    projections only where the backend has them: not cupy-persistent). On a GPU that width
    (H=256) is past the batch-tiled persistent form's register limit, so ``triton-persistent``
    runs the whole matrix a second time at H=32, which fits every dtype's batch-tiled form."""
    items = []
    matrix_h = shapes(dry_run)["H"]
    sizes = [(shapes(dry_run), FUSED)]
    if not dry_run:
        sizes.append((dict(T=64, B=16, In=32, H=32), ("triton-persistent",)))
        sizes.append((dict(T=64, B=16, In=16, H=VARIANT_TILED_H), ("triton-persistent",)))
    for shape, backends in sizes:
        for cell in CELLS + VARIANT_CELLS:
            variant = cell in VARIANT_CELLS
            dtypes = ("bf16",) if cell.endswith("_zr") else DTYPES
            for dtype in dtypes:
                for bidirectional in (False, True):
                    for packed in (False, True):
                        group = f"ref/{cell}/{dtype}/{bidirectional}/{packed}/H{shape['H']}"
                        for backend in backends:
                            if cell == "lstm_proj" and backend == "cupy-persistent":
                                continue
                            # Variants: the Triton backends only, at the first width (on
                            # triton-persistent: the split form) and at the variants' extra
                            # width (its batch-tiled form); the classic cells not at that one.
                            tiled_variant_width = shape["H"] == VARIANT_TILED_H and not dry_run
                            if variant and (backend not in TRITON or
                                            shape["H"] not in (matrix_h, VARIANT_TILED_H)):
                                continue
                            if not variant and tiled_variant_width:
                                continue
                            items.append(_item("correctness", "parity", group, CHECK_S,
                                               backend, cell, dtype, bidirectional, packed,
                                               shape))
    return items


def limit_items(dry_run):
    """Each persistent form at its documented size limit (must run and match the reference)
    and just past it (triton batch-tiled: must switch to the hidden-split form; hidden-split and
    cupy-persistent: must raise the ValueError that names the limit). The limits are computed
    on the device by the worker (``at`` = "limit" or "past")."""
    items = []
    # Small T and B: at the hidden-split limit (4224 units) the float64 oracle is the cost.
    T, B = (2, 2) if dry_run else (4, 4)
    for form, backend in (("batch_tiled", "triton-persistent"), ("split", "triton-persistent"),
                          ("cupy", "cupy-persistent")):
        for cell in ("lstm", "gru", "rnn_tanh"):
            for at in ("limit", "past"):
                items.append(_item("correctness", "limit", f"limit/{form}/{cell}", LIMIT_S, backend,
                                   cell, "bf16", False, False, dict(T=T, B=B), form=form, at=at))
    return items


def determinism_items(dry_run):
    shape = shapes(dry_run)
    return [_item("correctness", "determinism", "determinism", CHECK_S, b, "lstm", "bf16", True,
                  True, shape) for b in FUSED]


def eval_backward_items(dry_run):
    """Backward in eval mode (cuDNN refuses it): every backend, ``"auto"`` included, must
    differentiate and match the reference."""
    shape = shapes(dry_run)
    return [_item("correctness", "eval_backward", "eval_backward", CHECK_S, b, "lstm", "fp32", False,
                  False, shape) for b in ("auto",) + FUSED]


def double_backward_items(dry_run):
    """A gradient penalty through the layer (double backward) on every backend, ``"auto"``
    included, bidirectional and packed: the second-order path differentiates the composite
    layer, so it is slow by design and the shape is small."""
    shape = dict(T=3, B=3, In=5, H=6) if dry_run else dict(T=8, B=4, In=32, H=32)
    return [_item("correctness", "double_backward", "double_backward", CHECK_S, b, "lstm", "fp32",
                  True, True, shape) for b in ("auto",) + FUSED]


def timing_cases(dry_run):
    """The README's goal cases (``benchmark.Case``s) and the modes timed for each."""
    if dry_run:
        return [(Case("lstm", "fp32", 4, 8, 8, 8), ("fwd", "fwdbwd")),
                (Case("gru", "fp32", 4, 8, 8, 8, packed=True), ("fwdbwd",)),
                (Case("ln_lstm", "fp32", 4, 8, 8, 8), ("fwd",))]
    cases = []
    for cell in ("lstm", "gru"):
        cases.append((Case(cell, "bf16", 16, 1024, 768, 768), ("fwd", "fwdbwd")))
        cases += [(Case(cell, "bf16", 1, 1024, H, H), ("fwd",)) for H in (256, 768)]
        cases.append((Case(cell, "bf16", 64, 1024, 768, 768, packed=True), ("fwdbwd",)))
    cases.append((Case("lstm", "bf16", 256, 256, 1024, 1024), ("fwdbwd",)))
    # Issue 14: the LayerNorm LSTM against the torch composite (torch.nn has none).
    cases.append((Case("ln_lstm", "bf16", 16, 1024, 768, 768), ("fwd", "fwdbwd")))
    return cases


def timing_items(dry_run, peaks=None, providers=None):
    """One item per (case, provider); a case's items share a worker, torch.nn first."""
    from . import timing

    items = []
    for case, modes in timing_cases(dry_run):
        for provider in providers or timing.providers():
            items.append(_item("timing", "timing", f"timing/{case.id}", TIMING_S,
                               provider.split(":")[-1], case.cell, case.dtype,
                               case.bidirectional, case.packed,
                               dict(T=case.seq_len, B=case.batch, In=case.input_size,
                                    H=case.hidden_size),
                               provider=provider, modes=list(modes), peaks=peaks or {}))
    # The cells' 256-step decode loop (fusedrnn cell vs torch.nn's, eager and CUDA-graph).
    shape = dict(T=4, B=2, In=8, H=8) if dry_run else dict(T=256, B=0, In=1024, H=1024)
    for cell in ("lstm", "gru"):
        items.append(_item("timing", "cell_decode", "timing/cells", TIMING_S, "triton-step", cell,
                           "fp32" if dry_run else "bf16", shape=shape))
    return items


def warm_items(dry_run):
    """Phase c on a GPU: one forward+backward of every fused configuration the later phases
    run, in parallel workers, so Triton's and CuPy's on-disk caches hold every binary before
    anything is timed. Timing shapes are warmed at T=16: T enters the kernels only as a runtime
    integer, which Triton specialises by divisibility by 16 (and == 1), so 16 compiles the same
    binary as 1024 or 256."""
    items = []
    for it in correctness_matrix(dry_run):
        items.append(_item("compile", "warm", f"warm/{it['backend']}/{it['cell']}/{it['dtype']}",
                           WARM_S, it["backend"], it["cell"], it["dtype"], it["bidirectional"],
                           it["packed"], it["shape"]))
    for case, _ in timing_cases(dry_run):
        for backend in FUSED:
            shape = dict(T=16, B=case.batch, In=case.input_size, H=case.hidden_size)
            items.append(_item("compile", "warm", f"warm/{backend}/{case.cell}/{case.dtype}", WARM_S,
                               backend, case.cell, case.dtype, case.bidirectional, case.packed,
                               shape))
    return items


def aot_compile_items(dry_run):
    """Phase c without a GPU: compile every Triton kernel specialization to sm_90 (PTX and
    cubin, no launch) in parallel across the CPU cores; one item so it is timed as a whole."""
    return [_item("compile", "aot_sm90", "aot", 900, dtypes=list(DTYPES))]


def items_for(phase, dry_run, peaks=None):
    if phase == "env":
        return env_items(dry_run)
    if phase == "floors":
        return floor_items(dry_run)
    if phase == "compile":
        return aot_compile_items(dry_run) if dry_run else warm_items(dry_run)
    if phase == "correctness":
        return (correctness_matrix(dry_run) + limit_items(dry_run) + determinism_items(dry_run)
                + eval_backward_items(dry_run) + double_backward_items(dry_run))
    if phase == "timing":
        return timing_items(dry_run, peaks)
    raise ValueError(f"unknown phase {phase!r}; choose from {', '.join(PHASES)}")
