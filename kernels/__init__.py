"""GPU kernels of fusedrnn (installed as ``fusedrnn.kernels``).

``triton/`` holds the ``@triton.jit`` kernels and their launchers; ``cuda/`` the CUDA C sources
and their CuPy loader. Nothing here imports from ``fusedrnn`` itself (DESIGN.md §1).
"""
