"""The installed names (DESIGN.md §1): kernels/ and reference/ live inside the fusedrnn namespace."""

import importlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_installed_names_import():
    for name in ("fusedrnn", "fusedrnn.kernels", "fusedrnn.kernels.triton", "fusedrnn.kernels.cuda",
                 "fusedrnn.reference"):
        assert importlib.import_module(name).__name__ == name


def test_no_bare_top_level_kernels_or_reference_package():
    code = "import importlib.util as u; print(u.find_spec('kernels'), u.find_spec('reference'))"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["None", "None"]


def test_import_needs_neither_cupy_nor_gpu():
    code = ("import sys; sys.modules['cupy'] = None; import fusedrnn, torch; "
            "m = fusedrnn.LSTM(2, 3); print(m(torch.randn(4, 1, 2))[0].shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "torch.Size([4, 1, 3])"


def test_wheel_contains_the_mapped_packages(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True)
    (wheel,) = tmp_path.glob("fusedrnn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("fusedrnn/__init__.py", "fusedrnn/kernels/__init__.py",
                 "fusedrnn/kernels/triton/__init__.py", "fusedrnn/kernels/cuda/__init__.py",
                 "fusedrnn/reference/lstm_cell.py", "fusedrnn/reference/layer.py"):
        assert path in names, path
    assert not any(n.startswith(("kernels/", "reference/", "tests/")) for n in names)

    # And the installed wheel (not the checkout) imports under the mapped names.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True)
    code = ("import fusedrnn, fusedrnn.kernels.triton, fusedrnn.kernels.cuda, fusedrnn.reference as r; "
            "print(fusedrnn.__file__); print(r.__file__)")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert all(path.startswith(str(target)) for path in out), out
