"""CUDA C kernels launched through CuPy (``fusedrnn.kernels.cuda``); CuPy is imported lazily."""
