"""Triton < 3.8's interpreter with NumPy >= 2.4 (``kernels/triton/interpreter_compat``): the fix
applies exactly where needed and makes a runtime ``range()`` bound work again. Needs no Triton
3.6: the bug is re-created on the installed interpreter by putting 3.6's ``__index__`` back."""

import types

import numpy
import pytest
import torch
import triton
import triton.language as tl
from triton.runtime import interpreter
from triton.runtime.interpreter import InterpretedFunction

from fusedrnn.kernels.triton import interpreter_compat, launch_common
from fusedrnn.kernels.triton.interpreter_compat import fix_needed, patch_interpreter, version_tuple


@pytest.mark.parametrize("triton_version, numpy_version, interpreting, needed", [
    ("3.6.0", "2.4.6", True, True),        # the GPU machine's triton with CI's numpy
    ("3.6.0", "2.5.0", True, True),        # the GPU machine's own pair, interpreted
    ("3.7.1+gitabc", "2.5.0rc1", True, True),
    ("3.6.0", "2.3.5", True, False),       # old numpy: int() of a 1-element array still works
    ("3.8.0", "2.5.0", True, False),       # fixed upstream
    ("3.9.0", "2.4.6", True, False),       # CI
    ("3.6.0", "2.5.0", False, False),      # compiled path: the interpreter is not used
])
def test_fix_is_needed_exactly_for_old_triton_new_numpy_interpreted(triton_version, numpy_version,
                                                                    interpreting, needed):
    assert fix_needed(triton_version, numpy_version, interpreting) is needed


def test_unparseable_version_raises():
    with pytest.raises(ValueError, match="unparseable version"):
        version_tuple("main")


def _sum_rows(p_x, p_out, n, BLOCK: tl.constexpr):
    """out[:BLOCK] = Σ_{k<n} x[k, :BLOCK]; ``n`` is a runtime ``range()`` bound."""
    o = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(0, n):
        acc += tl.load(p_x + k * BLOCK + o)
    tl.store(p_out + o, acc)


def _triton36_patch_lang_tensor(original):
    """The installed hook, then Triton 3.6's ``__index__`` (``int()`` of the 1-element array)."""
    def patch(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data))
    return patch


def _run_sum_rows():
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    out = torch.full((4,), float("nan"))
    InterpretedFunction(_sum_rows)[(1,)](x, out, 3, BLOCK=4)
    return out, x.sum(0)


@pytest.mark.skipif(version_tuple(numpy.__version__) < (2, 4),
                    reason="the bug needs NumPy >= 2.4 (int() of a 1-d array raises from 2.4)")
def test_triton36_index_fails_with_new_numpy_and_the_fix_repairs_it(monkeypatch):
    monkeypatch.setattr(interpreter, "_patch_lang_tensor",
                        _triton36_patch_lang_tensor(interpreter._patch_lang_tensor))
    with pytest.raises(Exception, match="only 0-dimensional arrays can be converted"):
        _run_sum_rows()
    patch_interpreter(interpreter, "3.6.0", numpy.__version__)
    out, want = _run_sum_rows()
    assert torch.equal(out, want)


def test_fix_is_idempotent_and_restores_the_tensor_class(monkeypatch):
    buggy = _triton36_patch_lang_tensor(interpreter._patch_lang_tensor)
    monkeypatch.setattr(interpreter, "_patch_lang_tensor", buggy)
    patch_interpreter(interpreter, "3.6.0", "2.4.6")
    patch_interpreter(interpreter, "3.6.0", "2.4.6")
    assert interpreter._patch_lang_tensor.__wrapped__ is buggy
    before = getattr(tl.tensor, "__index__", None)
    _run_sum_rows()
    assert getattr(tl.tensor, "__index__", None) is before


def test_interpreter_without_the_hook_fails_at_once_naming_the_fix():
    stranger = types.SimpleNamespace()   # a Triton whose interpreter is laid out differently
    with pytest.raises(RuntimeError) as err:
        patch_interpreter(stranger, "3.6.0", "2.4.6")
    assert 'pip install "triton>=3.8"' in str(err.value) and '"numpy<2.4"' in str(err.value)


@pytest.mark.parametrize("triton_version, applied", [("3.6.0", True), ("3.9.0", False)])
def test_ensure_applies_the_fix_by_version(monkeypatch, triton_version, applied):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(triton, "__version__", triton_version)
    monkeypatch.setattr(numpy, "__version__", "2.4.6")
    original = lambda tensor, scope: None   # noqa: E731  (stands in for the installed hook)
    monkeypatch.setattr(interpreter, "_patch_lang_tensor", original)
    assert interpreter_compat.ensure_interpreter_works() is applied
    patched = interpreter._patch_lang_tensor is not original
    assert patched is applied


def test_kernel_import_applied_the_fix_where_this_environment_needs_it():
    import os
    needed = fix_needed(triton.__version__, numpy.__version__,
                        os.environ.get("TRITON_INTERPRET", "0") == "1")
    assert launch_common.INTERPRETER_FIXED is needed
    assert getattr(interpreter._patch_lang_tensor, "fusedrnn_index_fix", False) is needed
