"""Every CUDA C source compiles to sm_90 PTX, for every dtype and declared variant, with every
available compiler (nvcc and/or NVRTC); each declared kernel is a real PTX entry. No GPU needed.
See ``cuda_compile.py`` for the variant convention."""

import pytest

import cuda_compile

SOURCES = cuda_compile.sources()
CASES = [(path, defines) for path in SOURCES for defines in cuda_compile.variants(path)]


def test_a_compiler_is_available():
    assert cuda_compile.compilers(), cuda_compile.INSTALL_HINT


def test_the_sources_are_found():
    names = {p.name for p in SOURCES}
    assert {"lstm_step.cu", "gru_step.cu", "rnn_step.cu"} <= names, names


@pytest.mark.parametrize("dtype", sorted(cuda_compile.DTYPES), ids=cuda_compile.DTYPES.get)
@pytest.mark.parametrize("path,defines", CASES,
                         ids=[f"{p.name}{'[' + ' '.join(d) + ']' if d else ''}" for p, d in CASES])
def test_compiles_to_ptx(path, defines, dtype):
    compilers = cuda_compile.compilers()
    assert compilers, cuda_compile.INSTALL_HINT            # fail, never skip, without a compiler
    kernels = cuda_compile.kernel_names(path)
    assert kernels, f"{path.name} declares no extern \"C\" __global__ kernel"
    for compiler in compilers:
        ptx = cuda_compile.compile_ptx(path, dtype, defines, compiler)
        assert f".target sm_{cuda_compile.ARCH}" in ptx, compiler
        for kernel in kernels:
            assert f".entry {kernel}(" in ptx, f"{compiler}: no PTX entry for {kernel}"


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
