"""Shared test machinery: the tolerance table, NaN poisoning, the ``cuda`` marker, and the
Triton interpreter on machines without a GPU."""

import os

import pytest
import torch

# Triton decides at decoration time whether a kernel is interpreted, so this must happen
# before any kernel module is imported. With a GPU the kernels compile for real.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fusedrnn.allocation

# The tolerance table and the error measure live in the package, shared with the GPU check.
from fusedrnn.tolerances import TOLERANCES, rel_err  # noqa: E402,F401


def assert_rel_close(out, ref, dtype, what):
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{what}: non-finite values (unwritten output?)"
    err = rel_err(out, ref)
    assert err <= TOLERANCES[dtype], f"{what}: relative error {err:.3e} > {TOLERANCES[dtype]:.0e}"


@pytest.fixture
def matmul_tf32():
    """``set(value)`` for ``torch.backends.cuda.matmul.allow_tf32`` during one test, restored
    after it. Not ``monkeypatch.setattr``: the flag lives behind ``cuBLASModule.__getattr__``,
    which pytest >= 9.2 undoes with ``delattr``; that raises, aborts the rest of the undo and
    leaves earlier patches of the test in place for every later test (seen: the interpreter
    switched off for the rest of the suite)."""
    before = torch.backends.cuda.matmul.allow_tf32

    def set_flag(value):
        torch.backends.cuda.matmul.allow_tf32 = value
    yield set_flag
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.fixture(autouse=True)
def poison_library_outputs(monkeypatch):
    """Every tensor a backend allocates for its outputs starts as NaN."""
    monkeypatch.setattr(fusedrnn.allocation, "POISON", True)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is false)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
