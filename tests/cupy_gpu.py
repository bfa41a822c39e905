"""What the CUDA tests of the two CuPy backends share (``test_cupy_step.py``,
``test_cupy_persistent.py``).

* :func:`require_cupy`: on a machine with a GPU, a missing or broken CuPy *fails* the CuPy
  tests, with the install hint (DESIGN §7: no silently skipped configurations; a GPU runner
  without CuPy would otherwise report green while testing nothing of these backends). A GPU
  machine meant to run without CuPy opts out explicitly with ``FUSEDRNN_ALLOW_NO_CUPY=1``: the
  tests are then skipped, and the skip reason names the variable.
* :func:`record_launch_streams`: the CUDA stream handle of every kernel launch, so a test can
  assert that the kernels went on torch's current stream (not merely that results agreed).
"""

import os

import pytest

from fusedrnn.kernels.cuda import loader

ALLOW_NO_CUPY = "FUSEDRNN_ALLOW_NO_CUPY"


def require_cupy(backend):
    """The ``cupy`` module; otherwise fail (or, with ``FUSEDRNN_ALLOW_NO_CUPY=1``, skip)."""
    try:
        return loader.require_cupy(backend)
    except Exception as exc:        # ImportError, or whatever a broken install raises on import
        message = (f"{backend}: CuPy is missing or broken on this CUDA machine ({exc!r}). Install "
                   f"it ({loader.INSTALL_HINT}), or set {ALLOW_NO_CUPY}=1 to skip the CuPy "
                   f"backends' CUDA tests on purpose")
        if os.environ.get(ALLOW_NO_CUPY) == "1":
            pytest.skip(message)
        pytest.fail(message)


def record_launch_streams(monkeypatch):
    """The stream handles ``loader.launch`` hands CuPy, one per launch (a list that grows)."""
    handles = []
    real = loader._external_stream

    def recording(cupy, handle, device_index):
        handles.append(handle)
        return real(cupy, handle, device_index)

    monkeypatch.setattr(loader, "_external_stream", recording)
    return handles
