"""Every Triton step kernel compiles to sm_90 PTX for fp32, fp16 and bf16 — no GPU needed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXPECTED_VARIANTS = 13   # kernels × their constexpr switches, see ptx_compile.KERNELS


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_step_kernels_compile_to_sm90_ptx(dtype):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"   # today's default, stated to silence 3.9's notice
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("ptx_compile.py")), dtype],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == EXPECTED_VARIANTS, proc.stdout
    assert all(int(line.split()[-1]) > 10_000 for line in lines), proc.stdout
