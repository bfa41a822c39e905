"""Launchers of the ``cupy-persistent`` kernels (``<cell>_persistent.cu``): the launch plan (units
per block, staged chunk, shared memory), the size limits, and one kernel module per cell with
the interface ``fusedrnn.backends.triton_step.TritonStepBackend`` drives (``GATES``,
``WORKSPACE_COLUMNS``, ``split_biases``, ``forward``, ``backward``; layouts and outputs exactly
those of ``fusedrnn.kernels.triton.<cell>_step``).

Dimension legend: see ``persistent_common.cuh`` (T, B, D, H, G, NB, BHS, K, KP, KC, NW, NPAD).

Plan of one launch (``plan``). Each block keeps its slice of W_hh in shared memory for the whole
sequence, so the grid spreads W_hh over the SMs: at most ``SMs // D`` blocks per direction (one
block per SM: the W slice fills its shared memory), ``BHS = ceil(H / (SMs // D))`` units each.
With tensor cores the product's columns come in 16s, so BHS grows to fill them (same shared
memory, fewer blocks, less staging traffic). The rest of shared memory stages A (h forward,
dG backward) ``KC`` columns at a time, as many as fit (at most all of K, at least ``KC_MIN``).

Limits (``limit_reason``): a layer runs when the forward and the backward plan both fit the
device's opt-in shared memory per block. Largest H for an H100/H200 (132 SMs, 227 KiB), from
``max_hidden`` (the CPU tests recompute this table):

    =========  ==========  ==========  ==========
    cell       dtype       D=1         D=2
               batch       16    64    16    64
    =========  ==========  ====  ====  ====  ====
    LSTM       float32     1320  1248   924   880
    LSTM       float16     1320  1288   924   920
    LSTM       bfloat16    1712  1600  1056  1056
    GRU        float32     1520  1452  1072  1040
    GRU        float16     1525  1452  1072  1056
    GRU        bfloat16    2112  2112  1152  1114
    RNN        float32     2640  2576  1888  1840
    RNN        float16     2640  2576  1888  1840
    RNN        bfloat16    3456  3344  2304  2176
    =========  ==========  ====  ====  ====  ====

Each limit is where one plan's W slice plus a ``KC_MIN``-column chunk of A no longer fit. fp16 is
below bf16 because its backward multiplies fp32 operands (see persistent_common.cuh). LSTM bf16
at D=2 stops at 1056 for both batches because there the backward's BHS would pass 16: one more
16-column tile doubles its W slice (GRU and RNN bf16 stop at the chunk minimum instead).
The grid must also be co-resident (a cooperative launch): ``residency_reason`` and the launcher
check ``loader.max_cooperative_blocks`` and refuse with a reason / ``ValueError`` rather than
launching a grid that could not synchronise. No LSTM projection (``proj_size``) in this form.
"""

from dataclasses import dataclass
from types import SimpleNamespace

import numpy
import torch

from . import loader

BACKEND = "cupy-persistent"
WARPS = 8                  # persistent_common.cuh: WARPS, THREADS, TILE (a CPU test compares)
THREADS = 32 * WARPS
TILE = 16
# Fewest K columns a chunk may stage when all of K does not fit: every chunk costs two block
# barriers and an exposed L2 round trip, and 64 columns are 4 MMA k-steps per tile. Unmeasured
# (no GPU yet): a benchmark must confirm or move it.
KC_MIN = 64

_SOURCES = {"LSTM": "lstm_persistent.cu", "GRU": "gru_persistent.cu",
            "RNN_TANH": "rnn_persistent.cu", "RNN_RELU": "rnn_persistent.cu"}
# Compiled with enable_cooperative_groups=True (see compiled): the compile test builds these the
# way older CuPy does too (relocatable device code).
COOPERATIVE_SOURCES = frozenset(_SOURCES.values())
_DEFINES = {"LSTM": (), "GRU": (), "RNN_TANH": ("-DFUSEDRNN_RELU=0",),
            "RNN_RELU": ("-DFUSEDRNN_RELU=1",)}
_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_PREFIX = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn", "RNN_RELU": "rnn"}


# ------------------------------------------------------------------------------- plan and limits

def operand_bytes(dtype, backward):
    """Bytes of one GEMM operand element: 2 on tensor cores (fp16/bf16 forward, bf16 backward),
    4 for fp32 FMA (fp32 models, fp16 backward: see persistent_common.cuh)."""
    if dtype == torch.bfloat16 or (dtype == torch.float16 and not backward):
        return 2
    return 4


def _round_up(x, m):
    return -(-x // m) * m


def _align128(n):
    return _round_up(n, 128)


@dataclass(frozen=True)
class Layout:
    """The shared-memory carve of ``prnn::Layout`` (persistent_common.cuh), same formulas."""
    K: int
    nw: int
    kc: int
    B: int
    esize: int

    @property
    def mma(self):
        return self.esize == 2

    @property
    def kp(self):
        return _round_up(self.K, TILE)

    @property
    def npad(self):
        return _round_up(self.nw, TILE)

    @property
    def w_rows(self):
        return self.npad if self.mma else self.nw

    @property
    def pad(self):
        return 16 // self.esize

    @property
    def off_a(self):
        return _align128(self.w_rows * (self.kp + self.pad) * self.esize)

    @property
    def off_acc(self):
        return self.off_a + _align128(_round_up(self.B, TILE) * (self.kc + self.pad) * self.esize)

    @property
    def bytes(self):
        return self.off_acc + 4 * max(WARPS * TILE * TILE, _round_up(self.B, TILE) * self.npad)


@dataclass(frozen=True)
class Plan:
    """One launch: ``blocks`` per direction of ``bhs`` units, ``kc`` staged columns, ``smem``
    bytes of dynamic shared memory (``layout.bytes``)."""
    bhs: int
    blocks: int
    kc: int
    layout: Layout

    @property
    def smem(self):
        return self.layout.bytes


def plan(mode, H, B, D, dtype, backward, sms, smem_limit):
    """The launch plan of one layer's forward (``backward=False``) or backward kernel on a GPU
    with ``sms`` SMs and ``smem_limit`` bytes of opt-in shared memory per block, or a string
    saying why it does not fit."""
    G = _GATES[mode]
    esize = operand_bytes(dtype, backward)
    per_dir = sms // D
    if per_dir < 1:
        return f"{D} directions need at least {D} SMs"
    bhs = -(-H // per_dir)
    nw = G * bhs if not backward else bhs
    if esize == 2:                      # tensor cores: fill the padded columns with units
        npad = _round_up(nw, TILE)
        bhs = min(H, npad // G if not backward else npad)
        nw = G * bhs if not backward else bhs
    K = H if not backward else G * H
    kp = _round_up(K, TILE)
    # Bytes left for the A chunk's kc columns: base (kc = 0) already holds everything else,
    # the chunk's 16-byte row padding included.
    room = smem_limit - Layout(K, nw, 0, B, esize).bytes
    kc = min(kp, room // (_round_up(B, TILE) * esize) // TILE * TILE)
    while kc > 0 and Layout(K, nw, kc, B, esize).bytes > smem_limit:     # 128-byte rounding
        kc -= TILE
    if kc < min(kp, KC_MIN):
        need = Layout(K, nw, min(kp, KC_MIN), B, esize).bytes
        which = "backward" if backward else "forward"
        return (f"the {which} kernel's W_hh slice ({nw} rows of {K}) and batch {B} need "
                f"{need} bytes of shared memory per block, more than the GPU's {smem_limit}")
    return Plan(bhs=bhs, blocks=-(-H // bhs), kc=kc, layout=Layout(K, nw, kc, B, esize))


def limit_reason(mode, H, B, D, dtype, sms, smem_limit):
    """Why a layer (hidden size ``H``, batch ``B``, ``D`` directions) cannot run, or None."""
    for backward in (False, True):
        p = plan(mode, H, B, D, dtype, backward, sms, smem_limit)
        if isinstance(p, str):
            top = max_hidden(mode, B, D, dtype, sms, smem_limit)
            return (f"hidden size {H} with batch {B} ({D} direction(s), {dtype}) does not fit "
                    f"on chip: {p}; the largest hidden size at this batch on this GPU is {top}")
    return None


def max_hidden(mode, B, D, dtype, sms, smem_limit, upper=1 << 16):
    """Largest H for which both plans fit (bisection: the footprint grows with H)."""
    def fits(H):
        return all(not isinstance(plan(mode, H, B, D, dtype, bw, sms, smem_limit), str)
                   for bw in (False, True))
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


# ------------------------------------------------------------------------ device hooks (patched
# by the CPU tests, which run the kernels in a host emulation)

def device_limits(device):
    """``(SMs, opt-in shared memory bytes per block)`` of a CUDA device."""
    props = torch.cuda.get_device_properties(device)
    smem = getattr(props, "shared_memory_per_block_optin", None)
    if smem is None:
        cupy = loader.require_cupy(BACKEND)
        index = device.index if device.index is not None else torch.cuda.current_device()
        smem = cupy.cuda.Device(index).attributes["MaxSharedMemoryPerBlockOptin"]
    return props.multi_processor_count, int(smem)


def compiled(mode, backward, dtype, device=None):
    """The compiled cooperative kernel of ``mode``'s forward or backward for ``dtype``, loaded
    on ``device``."""
    name = f"{_PREFIX[mode]}_persistent_{'bwd' if backward else 'fwd'}"
    return loader.get_function(_SOURCES[mode], name, dtype, _DEFINES[mode], cooperative=True,
                               device=device)


def resident_blocks(fn, smem, device):
    """How many blocks of ``fn`` with ``smem`` bytes of dynamic shared memory can be resident at
    once on ``device``, after raising the kernel's dynamic shared-memory cap to ``smem`` (the
    occupancy query counts none above the cap, and the launch needs it raised anyway)."""
    cupy = loader.require_cupy(BACKEND)
    index = device.index if device.index is not None else torch.cuda.current_device()
    with cupy.cuda.Device(index):
        if fn.raw.max_dynamic_shared_size_bytes < smem:
            fn.raw.max_dynamic_shared_size_bytes = smem
    return loader.max_cooperative_blocks(fn, (THREADS,), smem, device)


def _residency_problem(fn, blocks, smem, capacity):
    if blocks <= capacity:
        return None
    return (f"{fn.name} needs {blocks} co-resident blocks of {THREADS} threads and {smem} bytes "
            f"of shared memory, but this GPU holds {capacity} (fewer SMs available, e.g. under "
            f"MPS, or a smaller hidden size or batch is needed)")


def residency_reason(mode, H, B, D, dtype, device, backward=True):
    """Why the cooperative grid of the layer's forward (and, with ``backward``, backward) kernel
    cannot be resident all at once on ``device``, or None. ``plan`` gives one block per SM, so
    this fires only where fewer blocks fit than the SM count says (MPS limits, other kernels'
    reservations). Compiles the kernels (cached)."""
    sms, smem_limit = device_limits(device)
    for bw in (False, True) if backward else (False,):
        p = plan(mode, H, B, D, dtype, bw, sms, smem_limit)
        if isinstance(p, str):
            return p
        fn = compiled(mode, bw, dtype, device)
        problem = _residency_problem(fn, p.blocks * D, p.smem, resident_blocks(fn, p.smem, device))
        if problem:
            return problem
    return None


def run(fn, grid, smem, args, device):
    """Launch cooperatively after raising the kernel's dynamic shared-memory cap to ``smem`` and
    checking that the whole grid can be resident (a grid barrier over blocks that cannot all
    run would hang; the driver would refuse it with a less helpful error)."""
    problem = _residency_problem(fn, grid[0] * grid[1], smem, resident_blocks(fn, smem, device))
    if problem:
        raise ValueError(f"{BACKEND}: {problem}")
    loader.launch(fn, grid, (THREADS,), args, shared_mem=smem, cooperative=True)


def kernel_smem(mode, backward, H, B, bhs, kc, dtype):
    """The dynamic shared memory the kernel's own carve needs, from the arguments it receives:
    ``Layout<op_t> L(H, G*bhs, kc, B)`` forward, ``L(G*H, bhs, kc, B)`` backward, as in
    ``<cell>_persistent.cu``. The launchers compare it with the plan's before every launch: the
    kernels ``__trap()`` on less (persistent_common.cuh ``require_smem``), which would end the
    CUDA context, so the host refuses first."""
    G = _GATES[mode]
    K, nw = (G * H, bhs) if backward else (H, G * bhs)
    return Layout(K, nw, kc, B, operand_bytes(dtype, backward)).bytes


def _check_smem(mode, backward, H, B, p, dtype):
    need = kernel_smem(mode, backward, H, B, p.bhs, p.kc, dtype)
    if need != p.smem:
        raise RuntimeError(f"{BACKEND}: the launch plan gives {p.smem} bytes of shared memory but "
                           f"the {'backward' if backward else 'forward'} kernel's carve needs "
                           f"{need} (plan {p}); refusing to launch a kernel that would trap")


# --------------------------------------------------------------------------------- the launchers

def _plan_or_raise(mode, H, B, D, dtype, backward, device):
    sms, smem_limit = device_limits(device)
    p = plan(mode, H, B, D, dtype, backward, sms, smem_limit)
    if isinstance(p, str):
        raise ValueError(f"{BACKEND} cannot run this layer: "
                         f"{limit_reason(mode, H, B, D, dtype, sms, smem_limit)}")
    return p


def _ints(*values):
    return [numpy.int32(v) for v in values]


def _n_steps(n_active):
    return sum(1 for n in n_active if n)


def _state_buffer(initial, D, B, kp, dtype):
    """``[2, D, B, KP]`` ping-pong buffer, zero past the state's width; slot 1 = ``initial``
    (the state "before step 0"), slot 0 is written by step 0."""
    buf = torch.zeros((2, D, B, kp), dtype=dtype, device=initial.device)
    buf[1, ..., :initial.shape[-1]] = initial
    return buf


def _operand_buffers(p, D, B, dtype, device):
    """``(gbuf_lo, gbuf_f32)``: the backward's dG ping-pong buffer in the GEMM operand type
    (zero past G*H) and a one-element placeholder for the pointer the kernel does not use."""
    shape = (2, D, B, p.layout.kp)
    if p.layout.mma:
        return (torch.zeros(shape, dtype=dtype, device=device),
                torch.zeros(1, dtype=torch.float32, device=device))
    return torch.zeros(1, dtype=dtype, device=device), torch.zeros(shape, dtype=torch.float32,
                                                                   device=device)


def _make(mode):
    G = _GATES[mode]

    def forward(xproj, w_hh, b_hh_kernel, h0, c0, lens, n_active, y, ws, w_hr=None):
        """One cooperative launch over all steps; arguments and outputs as
        ``<cell>_step.forward``."""
        if w_hr is not None:
            raise ValueError(f"{BACKEND} has no LSTM projection (proj_size) kernel")
        D, B, H = h0.shape
        T = xproj.shape[0]
        n_steps = _n_steps(n_active)
        if n_steps == 0 or B == 0:
            return
        p = _plan_or_raise(mode, H, B, D, w_hh.dtype, False, xproj.device)
        _check_smem(mode, False, H, B, p, w_hh.dtype)
        fn = compiled(mode, False, w_hh.dtype, xproj.device)
        hbuf = _state_buffer(h0, D, B, p.layout.kp, w_hh.dtype)
        nact = torch.tensor(n_active, dtype=torch.int32, device=xproj.device)
        tail = [lens, nact] + _ints(n_steps, T, B, H, p.bhs, p.kc)
        if mode == "LSTM":
            cstate = c0.float().contiguous().clone()
            args = [xproj, w_hh, hbuf, cstate, y, ws] + tail
        elif mode == "GRU":
            has_bhn = b_hh_kernel is not None
            args = [xproj, w_hh, b_hh_kernel if has_bhn else w_hh, hbuf, y, ws, lens, nact] \
                + _ints(int(has_bhn), n_steps, T, B, H, p.bhs, p.kc)
        else:
            args = [xproj, w_hh, hbuf, y] + tail
        run(fn, (p.blocks, D), p.smem, args, xproj.device)

    def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc, w_hr=None):
        """One cooperative launch over all steps (reverse); returns the dict of
        ``<cell>_step.backward``."""
        if w_hr is not None:
            raise ValueError(f"{BACKEND} has no LSTM projection (proj_size) kernel")
        D, B, H = h0.shape
        T = dy.shape[0]
        device = dy.device
        f32 = dict(dtype=torch.float32, device=device)
        if mode == "GRU":
            dgi, dgh = alloc((D, T, B, G * H)), alloc((D, T, B, G * H))
            out = {"dg_in": dgi, "dg_hid": dgh, "dh_carry": torch.zeros((D, B, H), **f32),
                   "dc": None}
        else:
            dg = alloc((D, T, B, G * H))
            out = {"dg_in": dg, "dg_hid": dg, "dh_carry": None,
                   "dc": torch.zeros((D, B, H), **f32) if mode == "LSTM" else None}
        if mode == "LSTM":
            out["dh_proj"] = None
        n_steps = _n_steps(n_active)
        if n_steps == 0 or B == 0:
            return out
        p = _plan_or_raise(mode, H, B, D, w_hh.dtype, True, device)
        _check_smem(mode, True, H, B, p, w_hh.dtype)
        fn = compiled(mode, True, w_hh.dtype, device)
        gbuf_lo, gbuf_f32 = _operand_buffers(p, D, B, w_hh.dtype, device)
        nact = torch.tensor(n_active, dtype=torch.int32, device=device)
        tail = [gbuf_lo, gbuf_f32, lens, nact] + _ints(n_steps, T, B, H, p.bhs, p.kc)
        if mode == "LSTM":
            args = [dy, dh_n, dc_n, w_hh, ws, c0, out["dg_in"], out["dc"]] + tail
        elif mode == "GRU":
            args = [dy, dh_n, w_hh, ws, y, h0, out["dg_in"], out["dg_hid"], out["dh_carry"]] + tail
        else:
            args = [dy, dh_n, w_hh, y, out["dg_in"]] + tail
        run(fn, (p.blocks, D), p.smem, args, device)
        return out

    split_biases = _split_biases_gru if mode == "GRU" else _split_biases_folded
    return SimpleNamespace(GATES=G, WORKSPACE_COLUMNS=_WORKSPACE_COLUMNS[mode],
                           split_biases=split_biases, forward=forward, backward=backward)


# The workspace and bias layouts of the Triton step modules (fusedrnn.kernels.triton.<cell>_step),
# which the host side shares: LSTM i f g o c, GRU r z n ghn, RNN nothing (h is read from y).
_WORKSPACE_COLUMNS = {"LSTM": 5, "GRU": 4, "RNN_TANH": 0, "RNN_RELU": 0}


def _split_biases_folded(dirs, H):
    """LSTM and RNN: both biases fold into the input projection: ``(xbias [D*G*H], None)``."""
    return torch.cat([p["b_ih"] + p["b_hh"] for p in dirs]), None


def _split_biases_gru(dirs, H):
    """GRU: ``(xbias [D*3H], b_hn [D, H])``; b_hr and b_hz fold into the input projection,
    b_hn stays in the kernel because the reset gate multiplies it."""
    xbias = torch.cat([p["b_ih"] + torch.cat([p["b_hh"][:2 * H], p["b_hh"].new_zeros(H)])
                       for p in dirs])
    return xbias, torch.stack([p["b_hh"][2 * H:] for p in dirs]).contiguous()


_MODULES = {}


def kernels(mode):
    """The kernel module of ``mode`` (``"LSTM"``, ``"GRU"``, ``"RNN_TANH"``, ``"RNN_RELU"``)."""
    if mode not in _MODULES:
        _MODULES[mode] = _make(mode)
    return _MODULES[mode]
