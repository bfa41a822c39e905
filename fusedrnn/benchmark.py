"""Throughput benchmarks: the case grid, the providers, floors, the table and the plot.

The timing itself is done by the pytest-benchmark suite in ``bench/`` (one implementation
of timing); ``python -m fusedrnn bench`` runs that suite, then reads its JSON back to print
the table and draw the plot. Everything here is importable without a GPU.

Modes: ``fwd`` is a forward pass under ``torch.no_grad`` (inference); ``bwd`` is the backward
pass alone (the forward runs in the untimed setup); ``fwdbwd`` is a training step's forward
and backward. Every provider includes the input projection, so the work is equal.
"""

import json
import math
import time
from dataclasses import asdict, dataclass

import torch
from torch.nn.utils.rnn import pack_padded_sequence

from . import modules
from .backends import registry as backend_registry
from .layer_config import GATES, LayerConfig

MODES = ("fwd", "bwd", "fwdbwd")
MODE = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN_TANH", "ln_lstm": "LSTM"}   # Case.cell -> mode
# torch.nn has no LayerNorm LSTM: its cases are judged against fusedrnn:torch, the composite of
# torch ops (a Python time loop), which is what users write today.
LAYER_NORM_CELLS = ("ln_lstm",)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    cell: str            # "lstm" | "gru" | "rnn" (tanh) | "ln_lstm" (fusedrnn.LayerNormLSTM)
    dtype: str           # key of DTYPES
    batch: int
    seq_len: int
    input_size: int
    hidden_size: int
    layers: int = 1
    bidirectional: bool = False
    packed: bool = False  # lengths uniform in [1, seq_len]

    @property
    def id(self):
        s = f"{self.cell}-{self.dtype}-B{self.batch}-T{self.seq_len}-H{self.hidden_size}"
        if self.layers > 1:
            s += f"-L{self.layers}"
        if self.bidirectional:
            s += "-bi"
        return s + ("-packed" if self.packed else "")


def _grid_gpu():
    cases = []
    for cell in ("lstm", "gru"):
        for B, T, H in [(1, 1024, 256), (1, 1024, 768), (16, 1024, 256), (16, 1024, 768),
                        (64, 1024, 256), (64, 1024, 768), (256, 256, 1024)]:
            cases.append(Case(cell, "bf16", B, T, H, H))
        for B, T, H in [(16, 1024, 768), (256, 256, 1024)]:   # the fp32 subset
            cases.append(Case(cell, "fp32", B, T, H, H))
        cases.append(Case(cell, "bf16", 64, 1024, 768, 768, packed=True))
        # Within the batch-tiled persistent form's register limits (H ≤ 64; 32 for IEEE fp32).
        for B, dtype, H in [(16, "bf16", 64), (64, "bf16", 64), (16, "fp32", 64)]:
            cases.append(Case(cell, dtype, B, 1024, H, H))
    cases.append(Case("lstm", "bf16", 32, 512, 512, 512, layers=2, bidirectional=True))
    cases += [Case("rnn", "bf16", 16, 1024, 128, 128), Case("rnn", "bf16", 16, 1024, 768, 768)]
    return cases


def _grid_cpu():
    # No GPU: CPU providers on small sizes only, so a run finishes in CI time.
    cases = []
    for cell in ("lstm", "gru"):
        cases += [Case(cell, "fp32", 4, 32, 32, 32), Case(cell, "fp32", 16, 64, 64, 64),
                  Case(cell, "fp32", 16, 64, 64, 64, packed=True)]
    cases.append(Case("lstm", "fp32", 8, 32, 32, 32, layers=2, bidirectional=True))
    return cases


def grid(device_type, quick=False, cells=None):
    """The fixed case grid for this device type; ``quick`` keeps one case per (cell, kind)."""
    cases = _grid_gpu() if device_type == "cuda" else _grid_cpu()
    if cells:
        cases = [c for c in cases if c.cell in cells]
    if quick:
        seen, kept = set(), []
        for c in cases:
            kind = (c.cell, c.packed, c.layers, c.dtype)
            if kind not in seen:
                seen.add(kind)
                kept.append(c)
        cases = kept
    return cases


# ------------------------------------------------------------------------------ providers

def provider_names():
    names = ["torch.nn"] + [f"fusedrnn:{b}" for b in backend_registry.AVAILABLE]
    try:
        import flashrnn  # noqa: F401
        names.append("flashrnn")
    except ImportError:
        pass
    return names


def unsupported(case, provider, device):
    """Why ``provider`` does not run ``case`` on ``device`` (a skip reason), or None."""
    if provider == "torch.nn":
        if case.cell in LAYER_NORM_CELLS:
            return "torch.nn has no LayerNorm LSTM (the baseline is fusedrnn:torch, the composite)"
        return None
    if provider == "flashrnn":
        if case.cell in LAYER_NORM_CELLS:
            return "FlashRNN has no LayerNorm LSTM"
        if device.type != "cuda":
            return "FlashRNN needs CUDA"
        if case.packed or case.layers > 1 or case.bidirectional:
            return "FlashRNN has no packed, multi-layer or bidirectional form"
        return None
    backend = provider.split(":", 1)[1]
    if backend == "reference" and (device.type != "cpu" or case.seq_len * case.batch > 256):
        return "the NumPy reference is the oracle, timed on tiny CPU cases only"
    if backend == "torch":
        return None   # the same kernels as torch.nn: timing it measures fusedrnn's overhead
    x = torch.empty(case.seq_len, case.batch, case.input_size, dtype=DTYPES[case.dtype],
                    device=device)
    from .kernels.triton.launch_common import interpreting
    if backend.startswith("triton") and interpreting():
        return "under TRITON_INTERPRET kernels run in Python: not kernel speed"
    cfg = LayerConfig(MODE[case.cell], case.bidirectional, True, False,
                      layer_norm=case.cell in LAYER_NORM_CELLS)
    G, H = GATES[cfg.mode], case.hidden_size
    weights = [torch.empty(G * H, case.input_size, device="meta"), torch.empty(G * H, H, device="meta")]
    return backend_registry.AVAILABLE[backend].unsupported_reason(cfg, x, weights)


class Runner:
    """A built model plus inputs for one (case, provider); the ``run_*`` methods are what the
    benchmarks time and they synchronise the GPU before returning."""

    def __init__(self, case, provider, device, seed=0):
        g = torch.Generator().manual_seed(seed)
        dtype = DTYPES[case.dtype]
        self.device = device
        kwargs = dict(num_layers=case.layers, bidirectional=case.bidirectional)
        torch.manual_seed(seed)
        cls_torch = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU,
                     "rnn": torch.nn.RNN}.get(case.cell)
        if provider == "torch.nn":
            self.model = cls_torch(case.input_size, case.hidden_size, **kwargs)
        elif provider == "flashrnn":
            self.model = _FlashRNNLayer(case)
        else:
            from .layernorm_modules import LayerNormLSTM

            cls = {"lstm": modules.LSTM, "gru": modules.GRU, "rnn": modules.RNN,
                   "ln_lstm": LayerNormLSTM}[case.cell]
            self.model = cls(case.input_size, case.hidden_size, backend=provider.split(":")[1],
                             **kwargs)
        self.model = self.model.to(device, dtype)
        x = torch.randn(case.seq_len, case.batch, case.input_size, generator=g).to(device, dtype)
        self.x = x.requires_grad_()
        self.lengths = None
        if case.packed:
            self.lengths = torch.randint(1, case.seq_len + 1, (case.batch,), generator=g)
            self.lengths[0] = case.seq_len
        self.out = None

    def _inputs(self):
        if self.lengths is None:
            return self.x
        return pack_padded_sequence(self.x, self.lengths, enforce_sorted=False)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _forward(self):
        out = self.model(self._inputs())[0]
        return out.data if hasattr(out, "batch_sizes") else out

    def run_fwd(self):
        with torch.no_grad():
            self._forward()
        self._sync()

    def setup_bwd(self):
        self.model.zero_grad(set_to_none=True)
        self.x.grad = None
        self.out = self._forward()
        self.grad = torch.ones_like(self.out)   # random values make no difference to the work
        self._sync()
        return (), {}

    def run_bwd(self):
        self.out.backward(self.grad)
        self._sync()

    def run_fwdbwd(self):
        self.model.zero_grad(set_to_none=True)
        out = self._forward()
        out.backward(torch.ones_like(out))
        self._sync()


class _FlashRNNLayer(torch.nn.Module):
    """FlashRNN's fused CUDA kernel (``pip install flashrnn``), one head of width H, with the
    input projection as a separate GEMM timed with it. Untested here: flashrnn is optional and
    neither development machine has it installed."""

    def __init__(self, case):
        super().__init__()
        G, H = GATES[MODE[case.cell]], case.hidden_size
        self.cell, self.G, self.H = case.cell, G, H
        self.w_ih = torch.nn.Parameter(torch.randn(G * H, case.input_size) / math.sqrt(H))
        self.R = torch.nn.Parameter(torch.randn(G, 1, H, H) / math.sqrt(H))
        self.b = torch.nn.Parameter(torch.zeros(G, 1, H))

    def forward(self, x):
        from flashrnn import flashrnn

        T, B, _ = x.shape
        wx = (x.transpose(0, 1) @ self.w_ih.t()).view(B, T, self.G, 1, self.H)
        dtype = {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(x.dtype, "float32")
        h, last = flashrnn(wx, self.R, self.b, function=self.cell, backend="cuda_fused", dtype=dtype)
        return h, last


# ------------------------------------------------------------------------- floors and peaks

def tokens(case):
    """Valid (row, step) pairs: B*T, or for packed cases the expected B*(T+1)/2 of lengths
    uniform in [1, T] (Runner draws them that way)."""
    n = case.batch * case.seq_len
    return n * (case.seq_len + 1) / (2 * case.seq_len) if case.packed else n


def flops(case, mode):
    """Matmul FLOPs of the case (the pointwise work is negligible next to them)."""
    G, H, D = GATES[MODE[case.cell]], case.hidden_size, 2 if case.bidirectional else 1
    steps = tokens(case)
    fwd = 0.0
    for layer in range(case.layers):
        In = case.input_size if layer == 0 else D * H
        fwd += 2 * steps * D * G * H * (In + H)
    return {"fwd": fwd, "bwd": 2 * fwd, "fwdbwd": 3 * fwd}[mode]


def min_bytes(case, mode):
    """Bytes that must cross HBM at least once: inputs, outputs, weights (and their gradients)."""
    G, H, D = GATES[MODE[case.cell]], case.hidden_size, 2 if case.bidirectional else 1
    size = torch.finfo(DTYPES[case.dtype]).bits // 8
    acts = case.seq_len * case.batch * (case.input_size + D * H)
    weights = sum(D * G * H * ((case.input_size if k == 0 else D * H) + H) for k in range(case.layers))
    fwd = (acts + weights) * size
    return {"fwd": fwd, "bwd": 2 * fwd, "fwdbwd": 3 * fwd}[mode]


def measure_peaks(device, dtype):
    """``(matmul FLOP/s, copy bytes/s)`` measured on this device (best of a few runs)."""
    n = 4096 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    # 1 GiB on a GPU: far beyond L2 (H200: 60 MiB), so the copy measures HBM, not cache.
    buf = torch.empty(2**30 if device.type == "cuda" else 16 * 2**20, dtype=torch.uint8,
                      device=device)
    # fp32 matmuls as the kernels run them: TF32 exactly when cuDNN would use it.
    tf32_before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32

    def best(fn, repeats=5):
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return min(times)

    try:
        best(lambda: a @ a, 2)
        rate = 2 * n ** 3 / best(lambda: a @ a)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32_before
    bandwidth = 2 * buf.numel() / best(lambda: buf.clone())
    return rate, bandwidth


def floor_seconds(case, mode, peaks):
    rate, bandwidth = peaks
    return max(flops(case, mode) / rate, min_bytes(case, mode) / bandwidth)


def extra_info(case, mode, provider, device, median_s, peaks):
    info = asdict(case)
    info.update(mode=mode, provider=provider, device=device_name(device),
                tokens_per_s=tokens(case) / median_s, tflops=flops(case, mode) / median_s / 1e12,
                floor_ms=floor_seconds(case, mode, peaks) * 1e3, case=case.id)
    return info


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------- reporting

REQUIRED_INFO = ("cell", "dtype", "batch", "seq_len", "input_size", "hidden_size", "layers",
                 "bidirectional", "packed", "mode", "provider", "device", "tokens_per_s", "tflops")


def add_ratios(benchmarks):
    """Set ``vs_torch`` (torch.nn median / this median) where torch.nn ran the same case; for a
    cell torch.nn lacks (``LAYER_NORM_CELLS``) the baseline is ``fusedrnn:torch``."""
    torch_median = {}
    for b in benchmarks:
        info = b["extra_info"]
        base = "fusedrnn:torch" if info.get("cell") in LAYER_NORM_CELLS else "torch.nn"
        if info.get("provider") == base:
            torch_median[(info["case"], info["mode"])] = b["stats"]["median"]
    for b in benchmarks:
        key = (b["extra_info"]["case"], b["extra_info"]["mode"])
        if key in torch_median:
            b["extra_info"]["vs_torch"] = torch_median[key] / b["stats"]["median"]


def table(report):
    """Readable table of a pytest-benchmark JSON report."""
    rows = [b["extra_info"] | {"ms": b["stats"]["median"] * 1e3} for b in report["benchmarks"]]
    rows.sort(key=lambda r: (r["case"], MODES.index(r["mode"]), r["provider"]))
    head = (f"{'case':34} {'mode':7} {'provider':26} {'ms':>9} {'tokens/s':>12} "
            f"{'vs torch.nn':>11} {'floor ms':>9} {'% of peak':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        vs = f"{r['vs_torch']:.2f}x" if "vs_torch" in r else "-"
        lines.append(f"{r['case']:34} {r['mode']:7} {r['provider']:26} {r['ms']:9.3f} "
                     f"{r['tokens_per_s']:12,.0f} {vs:>11} {r['floor_ms']:9.3f} "
                     f"{100 * r['floor_ms'] / r['ms']:8.1f}%")
    return "\n".join(lines)


def plot(report, path):
    """Bar chart of the speed-up over torch.nn per case and provider (fwdbwd and fwd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [b["extra_info"] for b in report["benchmarks"]
            if "vs_torch" in b["extra_info"] and b["extra_info"]["provider"] != "torch.nn"]
    modes = [m for m in ("fwd", "fwdbwd") if any(r["mode"] == m for r in rows)]
    fig, axes = plt.subplots(len(modes) or 1, 1, figsize=(12, 3.5 * max(len(modes), 1)),
                             squeeze=False)
    for ax, mode in zip(axes[:, 0], modes):
        sel = [r for r in rows if r["mode"] == mode]
        cases = sorted({r["case"] for r in sel})
        providers = sorted({r["provider"] for r in sel})
        width = 0.8 / max(len(providers), 1)
        for i, p in enumerate(providers):
            vals = [next((r["vs_torch"] for r in sel if r["case"] == c and r["provider"] == p),
                         0.0) for c in cases]
            ax.bar([k + i * width for k in range(len(cases))], vals, width, label=p)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(cases))], cases, rotation=20,
                      ha="right", fontsize=7)
        ax.set_ylabel(f"{mode}: speed-up vs torch.nn")
        ax.legend(fontsize=7)
    fig.suptitle(f"{report['fusedrnn']['device']} — {report['datetime'][:10]} — "
                 f"commit {report['fusedrnn'].get('commit') or report.get('commit_info', {}).get('id', '?')[:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load(path):
    with open(path) as f:
        return json.load(f)


def current_commit():
    """Short hash of the checkout; ``FUSEDRNN_COMMIT`` where there is no .git (the device's
    copy of the tree)."""
    import os
    import subprocess
    from pathlib import Path

    if os.environ.get("FUSEDRNN_COMMIT"):
        return os.environ["FUSEDRNN_COMMIT"]
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parent)
    except OSError:          # no git on this machine
        return "nocommit"
    return proc.stdout.strip() or "nocommit"


README_START = "<!-- performance:start (generated by python -m fusedrnn bench --update-readme) -->"
README_END = "<!-- performance:end -->"


def readme_section(report, json_rel, png_rel):
    """Markdown for README's Performance section from one report (fwdbwd and fwd rows)."""
    info = report["fusedrnn"]
    commit = info.get("commit") or report.get("commit_info", {}).get("id", "?")[:10]
    lines = [f"Measured on **{info['device']}**, {report['datetime'][:10]}, commit `{commit}` "
             f"([JSON]({json_rel}), [plot]({png_rel})). Median of the timed rounds; "
             "`vs torch.nn` is torch.nn's median over this one, measured in the same run.", ""]
    if info["device"].startswith("cpu"):
        lines += ["**CPU only — no GPU run is recorded yet.** These are the CPU providers on small "
                  "sizes: `fusedrnn:torch` runs torch's own kernels, so its ratio is fusedrnn's "
                  "Python overhead; the fused kernels are not timed without a GPU.", ""]
    for dtype, p in sorted(info.get("peaks", {}).items()):
        lines.append(f"Measured peaks ({dtype}): matmul {p['matmul_flops'] / 1e12:.2f} TFLOP/s, "
                     f"copy {p['copy_bytes_per_s'] / 1e9:.1f} GB/s.")
    floors = info.get("floors") or {}
    if floors:     # from python -m fusedrnn gpucheck: what a per-step time is judged against
        def f(key, unit, fmt="{:.2f}"):
            return f"{fmt.format(floors[key])} {unit}" if key in floors else "not measured"
        lines.append(
            f"Device floors: L2-resident read {f('l2_read_gb_per_s', 'GB/s', '{:.0f}')}; "
            f"empty-kernel launch {f('launch_triton_us', 'µs')} (Triton), "
            f"{f('launch_cupy_us', 'µs')} (CuPy); grid barrier {f('barrier_triton_132_us', 'µs')} / "
            f"{f('barrier_triton_264_us', 'µs')} (Triton atomic barrier, 132 / 264 programs), "
            f"{f('barrier_cuda_132_us', 'µs')} / {f('barrier_cuda_264_us', 'µs')} (CUDA grid.sync()). "
            "A persistent kernel's step costs at least one barrier; a step kernel's at least one "
            "launch.")
    lines += ["", "| case | mode | provider | ms | vs torch.nn | floor ms |", "|---|---|---|---:|---:|---:|"]
    rows = [b["extra_info"] | {"ms": b["stats"]["median"] * 1e3} for b in report["benchmarks"]
            if b["extra_info"]["mode"] in ("fwd", "fwdbwd")]
    rows.sort(key=lambda r: (r["case"], MODES.index(r["mode"]), r["provider"]))
    for r in rows:
        vs = f"{r['vs_torch']:.2f}x" if "vs_torch" in r else "-"
        lines.append(f"| {r['case']} | {r['mode']} | {r['provider']} | {r['ms']:.3f} | {vs} | "
                     f"{r['floor_ms']:.3f} |")
    lines += ["", f"![speed-up vs torch.nn]({png_rel})"]
    return "\n".join(lines)


def update_readme(readme, section):
    text = readme.read_text()
    start, end = text.index(README_START), text.index(README_END)
    readme.write_text(text[:start + len(README_START)] + "\n" + section + "\n" + text[end:])


def run(args):
    """``python -m fusedrnn bench``: run the suite in ``bench/``, then print, save and plot."""
    import datetime
    import os
    from pathlib import Path

    import pytest

    root = Path(__file__).resolve().parents[1]
    bench_dir = root / "bench"
    if args.from_json:
        json_path = Path(args.from_json).resolve()
        report = load(json_path)
        print(table(report))
        if args.update_readme:
            update_readme(root / "README.md", readme_section(
                report, json_path.relative_to(root).as_posix(),
                json_path.with_suffix(".png").relative_to(root).as_posix()))
        return json_path
    if not (bench_dir / "test_throughput.py").exists():
        raise SystemExit("python -m fusedrnn bench runs the suite in bench/: use a source checkout")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        print("No CUDA GPU: timing CPU providers on small sizes only (not kernel speed).")
    commit = current_commit()
    slug = "".join(ch if ch.isalnum() else "-" for ch in
                   (torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"))
    stem = f"{slug}-{datetime.date.today().isoformat()}-{commit}"
    out_dir = Path(args.out or bench_dir / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    os.environ["FUSEDRNN_BENCH_QUICK"] = "1" if args.quick else "0"
    os.environ["FUSEDRNN_BENCH_CELLS"] = ",".join(args.cells or [])
    code = pytest.main([str(bench_dir), "-q", "-p", "no:cacheprovider", "--benchmark-only",
                        f"--benchmark-json={json_path}", "-o", "addopts="])
    if code not in (0, pytest.ExitCode.NO_TESTS_COLLECTED):
        raise SystemExit(f"benchmark run failed (pytest exit code {int(code)})")
    report = load(json_path)
    print(table(report))
    plot(report, json_path.with_suffix(".png"))
    print(f"\nwrote {json_path} and {json_path.with_suffix('.png')}")
    if args.update_readme:
        update_readme(root / "README.md", readme_section(
            report, os.path.relpath(json_path, root), os.path.relpath(json_path.with_suffix(".png"), root)))
        print("updated README.md's Performance section")
    return json_path


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true", help="one case per cell and kind")
    parser.add_argument("--cells", nargs="+", choices=["lstm", "gru"])
    parser.add_argument("--out", default=None, help="folder for the JSON and PNG "
                        "(default: bench/results)")
    parser.add_argument("--update-readme", action="store_true",
                        help="rewrite README.md's Performance section from this run's results")
    parser.add_argument("--from-json", default=None,
                        help="no run: print (and with --update-readme, publish) a saved report")
