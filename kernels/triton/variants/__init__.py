"""Triton kernels of the cell variants (issue 14): LayerNorm LSTM/GRU, zoneout, resets.

One module per cell per family (``<cell>_step``, ``<cell>_persistent``), all behind the launcher
interface and the workspace layout of :mod:`.layout`, so the host side
(``fusedrnn/backends/triton_variant.py``) is shared by ``"triton-step"`` and
``"triton-persistent"``.
"""
