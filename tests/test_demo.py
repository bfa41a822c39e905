"""``python -m fusedrnn demo`` with tiny settings: completes, learns, samples."""

import re

import pytest

from fusedrnn import demo
from fusedrnn.cli import main


def test_shipped_text_is_packaged_and_substantial():
    text = demo.load_text()
    assert 100_000 < len(text) <= 200_000
    assert text.startswith("First Citizen:")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_demo_learns_and_samples(cell, capsys):
    results = main(["demo", "--cell", cell, "--steps", "40", "--hidden", "48", "--seq-len", "32",
                    "--batch", "8", "--sample-len", "40", "--device", "cpu", "--quiet"])
    out = capsys.readouterr().out
    for label in ("fusedrnn", "torch.nn"):
        first, last, val, rate = results[label]
        assert last < first - 0.5, (label, first, last)
        assert rate > 0
    # Same start, same batches, same math: the two models' losses agree.
    assert results["fusedrnn"][1] == pytest.approx(results["torch.nn"][1], rel=1e-4)
    assert re.search(r"fusedrnn / torch.nn throughput: \d+\.\d\dx", out)
    sample = out.split("sample (temperature 0.8):\n", 1)[1]
    assert sample.startswith("ROMEO:\n") and len(sample.strip()) >= len("ROMEO:") + 30


def test_demo_runs_on_the_triton_step_backend(capsys):
    """Under the interpreter (no GPU) this only shows the plumbing works end to end."""
    results = main(["demo", "--backend", "triton-step", "--steps", "3", "--hidden", "16",
                    "--seq-len", "8", "--batch", "4", "--sample-len", "5", "--device", "cpu",
                    "--quiet"])
    assert results["fusedrnn"][1] == pytest.approx(results["torch.nn"][1], rel=1e-3)
