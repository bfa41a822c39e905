"""Triton kernels (``fusedrnn.kernels.triton``): one file per cell per kernel family."""
