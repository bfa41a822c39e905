"""Triton < 3.8's interpreter with NumPy >= 2.4: one narrow fix, applied only where it is needed.

The bug. Under ``TRITON_INTERPRET=1`` a scalar inside a kernel is a one-element NumPy array, and
Triton 3.6's interpreter turns it into a Python int for ``range()`` with
``int(self.handle.data)`` (``__index__`` in ``triton/runtime/interpreter.py``). NumPy 2.4 made
``int()`` of a 1-d array an error ("only 0-dimensional arrays can be converted to Python
scalars"), so every kernel with a runtime ``range()`` bound (all of ours: the K loops, the time
loops) fails. Reproduced with triton 3.6.0 + numpy 2.4.6 on
``tests/test_triton_step.py -k "lstm and float32"``. Upstream's fix, ``int(data.squeeze())``, is
in 3.7.1 (read from its wheel) and 3.8+; 3.7.0 was not checked, so the bound is the issue's 3.8.

The fix. ``_patch_lang_tensor`` installs the interpreter's ``tl.tensor`` dunders at every
interpreted launch; we wrap it so that, after the original ran, ``__index__`` is upstream's
fixed lambda. Nothing else changes. Applied only when all three hold: interpreting, triton <
3.8, numpy >= 2.4 (``fix_needed``). If the interpreter's layout is not the one this wrapper was
written against, importing the kernels raises at once with the two ways out.
"""

import os
import re

FIXED_IN_TRITON = (3, 8)
BROKEN_FROM_NUMPY = (2, 4)
REMEDY = 'pip install "triton>=3.8"  (or  pip install "numpy<2.4")'


def version_tuple(version):
    """``"3.6.0+git1234"`` -> ``(3, 6)``: the leading major and minor numbers."""
    m = re.match(r"(\d+)\.(\d+)", version)
    if m is None:
        raise ValueError(f"unparseable version string {version!r}")
    return int(m.group(1)), int(m.group(2))


def fix_needed(triton_version, numpy_version, interpreting):
    """Whether this combination meets the ``__index__`` bug (versions as in ``__version__``)."""
    return (interpreting and version_tuple(triton_version) < FIXED_IN_TRITON
            and version_tuple(numpy_version) >= BROKEN_FROM_NUMPY)


def fixed_index(tensor):
    """Upstream's ``__index__`` (Triton >= 3.7.1): the scalar's one-element array, squeezed."""
    return int(tensor.handle.data.squeeze())


def patch_interpreter(interpreter, triton_version, numpy_version):
    """Wrap ``interpreter._patch_lang_tensor`` so interpreted tensors get ``fixed_index``.

    ``interpreter`` is the ``triton.runtime.interpreter`` module. Idempotent. Raises
    ``RuntimeError`` naming the remedy if the module lacks the hook this fix relies on.
    """
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or not hasattr(getattr(interpreter, "_LangPatchScope", None), "set_attr"):
        raise RuntimeError(
            f"Triton {triton_version}'s interpreter cannot run fusedrnn's kernels with NumPy "
            f"{numpy_version} (int() of a one-element array in __index__; fixed in Triton 3.8), "
            f"and fusedrnn's workaround does not fit this Triton's interpreter. Fix: {REMEDY}")
    if getattr(original, "fusedrnn_index_fix", False):
        return

    def _patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        # The scope records the value it replaces and restores in reverse order, so after the
        # launch the tensor class is exactly as before.
        scope.set_attr(tensor, "__index__", fixed_index)

    _patch_lang_tensor.fusedrnn_index_fix = True
    _patch_lang_tensor.__wrapped__ = original
    interpreter._patch_lang_tensor = _patch_lang_tensor


def ensure_interpreter_works():
    """Apply the fix where ``fix_needed``; returns whether it was applied.

    Called when ``launch_common`` is imported, i.e. before any of our kernels can launch.
    """
    import numpy
    import triton

    interpreting = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if not fix_needed(triton.__version__, numpy.__version__, interpreting):
        return False
    from triton.runtime import interpreter

    patch_interpreter(interpreter, triton.__version__, numpy.__version__)
    return True
