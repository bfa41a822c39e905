"""The CuPy plumbing without CuPy (CPU): the install hint, lazy import, signature parsing and
argument checks that guard against CuPy's silent by-numpy-type argument passing."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy
import pytest
import torch

from fusedrnn.backends.cupy_step import CupyStepBackend
from fusedrnn.kernels.cuda import loader
from fusedrnn.layer_config import LayerConfig


@pytest.fixture
def no_cupy(monkeypatch):
    """CuPy absent, even where it is installed (``import cupy`` raises ImportError)."""
    monkeypatch.setitem(sys.modules, "cupy", None)


def _names_the_extras(message):
    assert 'pip install "fusedrnn[cuda13]"' in message and '"fusedrnn[cuda12]"' in message, message


def test_require_cupy_names_the_extra(no_cupy):
    with pytest.raises(ImportError) as info:
        loader.require_cupy("cupy-step")
    assert "cupy-step" in str(info.value)
    _names_the_extras(str(info.value))


def test_requesting_kernels_without_cupy_raises_import_error(no_cupy):
    with pytest.raises(ImportError) as info:
        loader.get_function("lstm_step.cu", "lstm_step_fwd", torch.float32)
    _names_the_extras(str(info.value))
    for mode in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"):
        with pytest.raises(ImportError, match="cupy-step") as info:
            CupyStepBackend()._kernels(mode)
        _names_the_extras(str(info.value))


def test_without_cupy_the_backend_gives_a_reason_naming_the_extra(no_cupy):
    # A CUDA input stands in as what unsupported_reason reads of it (device, dtype, shape).
    x = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.float32, shape=(2, 1, 3))
    reason = CupyStepBackend().unsupported_reason(LayerConfig("GRU", False, True, False), x,
                                                  [torch.empty(12, 3), torch.empty(12, 4)])
    _names_the_extras(reason)


def test_cpu_tensors_and_float64_are_refused_with_a_reason():
    cfg = LayerConfig("LSTM", False, True, False)
    w = [torch.empty(16, 3), torch.empty(16, 4), torch.empty(16), torch.empty(16)]
    assert "CUDA tensors" in CupyStepBackend().unsupported_reason(cfg, torch.empty(2, 1, 3), w)
    x64 = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.float64, shape=(2, 1, 3))
    assert "float64" in CupyStepBackend().unsupported_reason(cfg, x64, w)


def test_workspace_spec_needs_no_cupy(no_cupy):
    """The op's fake implementation (torch.compile) asks for shapes only."""
    cfg = LayerConfig("LSTM", True, True, False)
    assert CupyStepBackend().workspace_spec(cfg, torch.empty(5, 3, 2), 7) == ((2, 5, 3, 35), torch.float32)
    cfg = LayerConfig("RNN_TANH", False, True, False)
    assert CupyStepBackend().workspace_spec(cfg, torch.empty(5, 3, 2), 7) == ((0,), torch.float32)


def test_importing_fusedrnn_and_other_backends_never_import_cupy():
    code = """
import sys, torch
import fusedrnn
from fusedrnn.backends import cupy_step as backend_cupy_step
from fusedrnn.kernels.cuda import loader, step_launch, lstm_step, gru_step, rnn_step
for backend in ("torch", "reference"):
    out, _ = fusedrnn.LSTM(3, 4, backend=backend)(torch.randn(2, 1, 3))
    out.sum().backward()
assert "cupy" not in sys.modules, "cupy was imported"
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


# ---------------------------------------------------------------------------------------------
# Signatures and argument checks.

def test_signature_parsing():
    src = """
    // a comment with extern "C" __global__ void fake(int x)
    extern "C" __global__ void __launch_bounds__(256) k1(const scalar_t *__restrict__ x, /* c */
        float* ws, const long long *lens, long long off, int n, float a, bool flag) {}
    extern "C" __global__ void k2() {}
    """
    sig = loader.parse_signatures(src)
    assert list(sig) == ["k1", "k2"]
    assert [(p.ctype, p.pointer, p.name) for p in sig["k1"]] == [
        ("scalar_t", True, "x"), ("float", True, "ws"), ("long long", True, "lens"),
        ("long long", False, "off"), ("int", False, "n"), ("float", False, "a"), ("bool", False, "flag")]
    assert sig["k2"] == []


def test_every_kernel_parameter_type_is_one_the_loader_can_check():
    for path in sorted(Path(loader.source_dir()).glob("*.cu")):
        for kernel, params in loader.parse_signatures(path.read_text()).items():
            assert params, f"{path.name}:{kernel}"
            for p in params:
                known = (p.ctype == "scalar_t" or p.ctype in loader.POINTER_DTYPES) if p.pointer \
                    else p.ctype in loader.SCALAR_TYPES
                assert known, f"{path.name}:{kernel}({p.ctype}{' *' if p.pointer else ''} {p.name})"


def _params():
    return loader.parse_signatures(
        'extern "C" __global__ void k(const scalar_t* x, float* w, const long long* lens, '
        'long long off, int n, bool f) {}')["k"]


def _good_args():
    return [torch.zeros(4, dtype=torch.bfloat16), torch.zeros(3), torch.zeros(2, dtype=torch.int64),
            numpy.int64(5), numpy.int32(2), numpy.bool_(True)]


def test_check_args_accepts_exact_types():
    loader.check_args("k", _params(), _good_args(), torch.bfloat16)


@pytest.mark.parametrize("index,bad,match", [
    (4, 2, "numpy.int32"),                                   # a plain int would go as int64
    (3, numpy.int32(5), "numpy.int64"),                      # long long given 4 bytes
    (5, True, "numpy.bool"),
    (0, torch.zeros(4, dtype=torch.float16), "bfloat16"),    # scalar_t is the compiled dtype
    (1, torch.zeros(3, dtype=torch.float64), "float32"),
    (2, torch.zeros(2, dtype=torch.int32), "int64"),
    (1, torch.zeros(3, 2).t(), "contiguous"),
    (0, numpy.int64(0), "tensor"),
])
def test_check_args_refuses_mismatches(index, bad, match):
    args = _good_args()
    args[index] = bad
    with pytest.raises(TypeError, match=match):
        loader.check_args("k", _params(), args, torch.bfloat16)


def test_check_args_counts():
    with pytest.raises(TypeError, match="5 arguments for 6 parameters"):
        loader.check_args("k", _params(), _good_args()[:5], torch.bfloat16)


def test_empty_grid_launches_nothing_and_needs_no_device(no_cupy):
    k = loader.Kernel(raw=None, name="k", params=_params(), dtype=torch.bfloat16, cooperative=False)
    assert loader.launch(k, (0, 2), (256,), _good_args()) is None
    with pytest.raises(ValueError, match="cooperative"):
        loader.launch(k, (1, 1), (256,), _good_args(), cooperative=True)


def test_launch_refuses_cpu_tensors_before_touching_cupy(no_cupy):
    k = loader.Kernel(raw=None, name="k", params=_params(), dtype=torch.bfloat16, cooperative=False)
    with pytest.raises(TypeError, match="CUDA device"):
        loader.launch(k, (1, 1), (256,), _good_args())


def test_dtype_codes_match_common_cuh():
    text = (Path(loader.source_dir()) / "common.cuh").read_text()
    for dtype, code in loader.DTYPE_CODES.items():
        ctype = {torch.float32: "float", torch.float16: "__half", torch.bfloat16: "__nv_bfloat16"}[dtype]
        assert f"FUSEDRNN_DTYPE == {code}\ntypedef {ctype} scalar_t;" in text
    assert loader.compile_options(torch.float16, ("-DX=1",)) == (
        "-std=c++17", f"-I{loader.source_dir()}", "-DFUSEDRNN_DTYPE=1", "-DX=1")
    with pytest.raises(ValueError, match="float64"):
        loader.dtype_code(torch.float64)


def test_sources_are_package_data():
    """Installed from a wheel the loader finds the sources through importlib.resources; the
    pyproject's package-data must therefore carry .cu and .cuh."""
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"fusedrnn.kernels.cuda" = ["*.cu", "*.cuh"]' in text
    assert "lstm_step_fwd" in loader.read_source("lstm_step.cu")
    assert len(loader.headers_digest()) == 64


def test_the_extras_install_cupy_with_the_toolkit_pieces():
    """NVRTC needs cuda_fp16.h / cuda_bf16.h (and for cupy-persistent mma.h's crt/mma.h) on its
    include path: CuPy's [ctk] extra installs the cudart wheel's headers, cuda-toolkit[crt] the
    crt ones, where no CUDA toolkit is installed."""
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert 'cuda13 = ["cupy-cuda13x[ctk]>=14", "cuda-toolkit[crt]==13.*"]' in text
    assert 'cuda12 = ["cupy-cuda12x[ctk]>=14"]' in text


# ---------------------------------------------------------------------------------------------
# Compilation through a stand-in CuPy (records what the loader asks of it).

class _FakeCupy:
    """What the loader uses of CuPy: ``cuda.Device`` (a context manager setting the current
    device), ``cuda.get_cuda_path``, ``RawModule(code, options, enable_cooperative_groups)`` whose
    ``get_function`` records the device current at the call (where CuPy compiles and loads)."""

    def __init__(self, cuda_path=None):
        self.current = 0
        self.modules, self.loads = [], []
        fake = self

        class Device:
            def __init__(self, index):
                self.index = index

            def __enter__(self):
                self.previous, fake.current = fake.current, self.index

            def __exit__(self, *exc):
                fake.current = self.previous

        class RawModule:
            def __init__(self, code, options, enable_cooperative_groups):
                fake.modules.append((options, enable_cooperative_groups))

            def get_function(self, name):
                fake.loads.append((name, fake.current))
                return SimpleNamespace(name=name)

        self.RawModule = RawModule
        self.cuda = SimpleNamespace(Device=Device, get_cuda_path=lambda: cuda_path)


@pytest.fixture
def fake_cupy(monkeypatch):
    cupy = _FakeCupy(cuda_path=None)
    monkeypatch.setattr(loader, "require_cupy", lambda name: cupy)
    for cached in (loader._module, loader._kernel):
        cached.cache_clear()
    yield cupy
    for cached in (loader._module, loader._kernel):
        cached.cache_clear()


def test_get_function_compiles_and_loads_on_the_tensors_device(fake_cupy):
    """CuPy's RawModule.get_function compiles and loads on the *current* device: the loader makes
    that the requested one, and caches per device."""
    k1 = loader.get_function("gru_step.cu", "gru_step_fwd", torch.bfloat16, device="cuda:1")
    again = loader.get_function("gru_step.cu", "gru_step_fwd", torch.bfloat16,
                                device=torch.device("cuda", 1))
    k0 = loader.get_function("gru_step.cu", "gru_step_fwd", torch.bfloat16, device=0)
    assert again is k1 and k0 is not k1
    assert fake_cupy.loads == [("gru_step_fwd", 1), ("gru_step_fwd", 0)]
    assert fake_cupy.current == 0
    assert len(fake_cupy.modules) == 1                      # one RawModule, loaded per device
    options, cooperative = fake_cupy.modules[0]
    assert options[:3] == loader.compile_options(torch.bfloat16) and not cooperative
    assert (k1.name, k1.dtype, k1.cooperative) == ("gru_step_fwd", torch.bfloat16, False)
    with pytest.raises(TypeError, match="CUDA device"):
        loader.get_function("gru_step.cu", "gru_step_fwd", torch.bfloat16, device="cpu")


def _with_headers(root, headers=loader.TOOLKIT_HEADERS):
    for h in headers:
        (root / "include" / h).parent.mkdir(parents=True, exist_ok=True)
        (root / "include" / h).write_text("// stand-in\n")
    return str(root)


def test_toolkit_include_dir_only_where_cupys_cuda_path_lacks_headers(monkeypatch, tmp_path):
    cupys = _with_headers(tmp_path / "cupy_cuda")
    home = _with_headers(tmp_path / "home")
    monkeypatch.setenv("CUDA_HOME", home)
    assert loader.toolkit_include_dir(cupys) is None            # CuPy passes -I itself
    assert loader.toolkit_include_dir(None) == str(Path(home, "include"))
    assert loader.toolkit_include_dir(str(tmp_path / "split_pip_layout")) == str(Path(home, "include"))
    # A pip layout with the cudart headers but not crt/ (no cuda-toolkit[crt]): not enough for
    # mma.h, so the complete toolkit is used.
    cudart_only = _with_headers(tmp_path / "cu13", ("cuda_fp16.h", "cuda_bf16.h"))
    assert loader.toolkit_include_dir(cudart_only) == str(Path(home, "include"))


@pytest.mark.parametrize("log,hint", [
    ('mma.h(55): catastrophic error: cannot open source file "crt/mma.h"', True),
    ("lstm_step.cu(12): error: identifier \"x\" is undefined", False),
])
def test_a_missing_header_names_the_install(fake_cupy, log, hint):
    def failing_get_function(self, name):
        raise Exception(log)            # stands in for cupy.cuda.compiler.CompileException

    fake_cupy.RawModule.get_function = failing_get_function
    with pytest.raises(Exception) as info:
        loader.get_function("lstm_step.cu", "lstm_step_fwd", torch.float32, device=0)
    assert log in str(info.value)
    assert (type(info.value) is RuntimeError) == hint
    if hint:
        _names_the_extras(str(info.value))


def test_the_toolkit_include_is_added_to_the_compile_options(fake_cupy, monkeypatch, tmp_path):
    home = _with_headers(tmp_path / "home")
    monkeypatch.setenv("CUDA_HOME", home)
    loader.get_function("rnn_step.cu", "rnn_step_fwd", torch.float16, ("-DFUSEDRNN_RELU=1",), device=0)
    options, _ = fake_cupy.modules[0]
    assert options == (*loader.compile_options(torch.float16, ("-DFUSEDRNN_RELU=1",)),
                       f"-I{Path(home, 'include')}")
