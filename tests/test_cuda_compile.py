"""Every CUDA C source compiles to sm_90 PTX, for every dtype and declared variant, with every
available compiler (nvcc and/or NVRTC), with the options CuPy compiles it with; each declared
kernel is a real PTX entry. The cooperative sources also compile as relocatable device code (how
CuPy before 14.2 builds them). No GPU needed. See ``cuda_compile.py`` for the variant convention."""

import pytest

import cuda_compile
from fusedrnn.kernels.cuda import loader

SOURCES = cuda_compile.sources()
CASES = [(path, defines) for path in SOURCES for defines in cuda_compile.variants(path)]
# Relocatable builds of the cooperative sources in bf16 only: the dtype changes the operand types,
# not what -rdc accepts, and each build costs ~1 s of the CI's two cores.
RDC_CASES = [(p, d) for p, d in CASES if cuda_compile.cooperative(p)]


def test_a_compiler_is_available():
    assert cuda_compile.compilers(), cuda_compile.INSTALL_HINT


def test_the_sources_are_found():
    names = {p.name for p in SOURCES}
    assert {"lstm_step.cu", "gru_step.cu", "rnn_step.cu"} <= names, names


@pytest.mark.parametrize("dtype", sorted(cuda_compile.DTYPES), ids=cuda_compile.DTYPES.get)
@pytest.mark.parametrize("path,defines", CASES,
                         ids=[f"{p.name}{'[' + ' '.join(d) + ']' if d else ''}" for p, d in CASES])
def test_compiles_to_ptx(path, defines, dtype):
    _check_compiles(path, defines, dtype, rdc=False)


@pytest.mark.parametrize("path,defines", RDC_CASES,
                         ids=[f"{p.name}{'[' + ' '.join(d) + ']' if d else ''}" for p, d in RDC_CASES])
def test_cooperative_sources_compile_as_relocatable_code(path, defines):
    _check_compiles(path, defines, 2, rdc=True)


def _check_compiles(path, defines, dtype, rdc):
    compilers = cuda_compile.compilers()
    assert compilers, cuda_compile.INSTALL_HINT            # fail, never skip, without a compiler
    kernels = cuda_compile.kernel_names(path)
    assert kernels, f"{path.name} declares no extern \"C\" __global__ kernel"
    for compiler in compilers:
        ptx = cuda_compile.compile_ptx(path, dtype, defines, compiler, rdc=rdc)
        assert f".target sm_{cuda_compile.ARCH}" in ptx, compiler
        for kernel in kernels:
            assert f".entry {kernel}(" in ptx, f"{compiler}: no PTX entry for {kernel}"
        # Nothing to link: no call leaves the module (so libcudadevrt.a, which CuPy before 14.2
        # links into cooperative modules, resolves nothing of ours).
        assert ".extern .func" not in ptx, f"{compiler}: {path.name} calls an external function"


def test_the_cooperative_sources_are_the_grid_synchronising_ones():
    """Every source that reaches a grid barrier (persistent_common.cuh, or cooperative_groups'
    grid.sync() directly, as the GPU check's probe) is compiled cooperatively, and only those."""
    syncing = {p.name for p in SOURCES if '#include "persistent_common.cuh"' in p.read_text()
               or "grid.sync()" in p.read_text()}
    assert syncing and syncing == {p.name for p in SOURCES if cuda_compile.cooperative(p)}


def test_compile_options_are_what_cupy_passes():
    options = cuda_compile.cupy_options(2, ("-DX=1",), "nvrtc", rdc=True)
    assert options[:4] == loader.compile_options(2, ("-DX=1",))
    assert "-ftz=true" in options and "--device-c" in options
    assert "-rdc=true" in cuda_compile.cupy_options(0, (), "nvcc", rdc=True)
    assert not {"-rdc=true", "--device-c"} & set(cuda_compile.cupy_options(0, (), "nvcc"))


def test_variant_lines_parse(tmp_path):
    one = tmp_path / "a.cu"
    one.write_text("// fusedrnn-compile: -DX=0 | -DX=1 -DY=2\nextern \"C\" __global__ void k() {}\n")
    assert cuda_compile.variants(one) == [("-DX=0",), ("-DX=1", "-DY=2")]
    plain = tmp_path / "b.cu"
    plain.write_text("#include \"common.cuh\"\n")
    assert cuda_compile.variants(plain) == [()]
    empty = tmp_path / "c.cu"
    empty.write_text("// fusedrnn-compile: -DX=0 |\n")
    with pytest.raises(ValueError, match="empty variant"):
        cuda_compile.variants(empty)
