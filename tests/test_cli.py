"""``python -m fusedrnn quickstart``: the README's first command."""

import re
import subprocess
import sys

import pytest

from fusedrnn.cli import main


@pytest.mark.parametrize("backend,ran", [("auto", "torch"), ("reference", "reference")])
def test_quickstart_reports_shapes_backend_and_agreement(capsys, backend, ran):
    main(["quickstart", "--backend", backend, "--batch", "3", "--seq-len", "5", "--hidden", "7",
          "--layers", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert f"-> ran '{ran}'" in out
    assert "output          (3, 5, 7)" in out
    diff = float(re.search(r"max \|out - torch.nn.LSTM\| = (\S+)", out).group(1))
    assert diff < 1e-5   # float32 run of the same weights


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "fusedrnn", "quickstart", "--seq-len", "3"],
                          capture_output=True, text=True, check=True)
    assert "h_n, c_n" in proc.stdout


def test_unknown_backend_is_rejected():
    with pytest.raises(SystemExit):
        main(["quickstart", "--backend", "no-such-backend"])
