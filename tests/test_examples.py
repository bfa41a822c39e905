"""The scripts in examples/ run with tiny settings, finish, and learn.

examples/ is not a package, so each script is loaded from its file. Every run is seeded; the
settings leave a wide margin between the loss before and after training.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: a second OpenMP thread only adds synchronisation, and on a busy
    2-core machine it can make a step 100x slower. One thread also keeps the runs bit-identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = {
    "many_to_one_classification": ["--steps", "60", "--hidden", "16", "--batch", "32"],
    "many_to_many_tagging": ["--steps", "30", "--hidden", "16", "--length", "12"],
    "one_to_many_generation": ["--steps", "30", "--hidden", "32", "--length", "8",
                               "--strides", "2"],
    "encoder_decoder": ["--steps", "40", "--hidden", "32", "--length", "4"],
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_example_learns(name, capsys):
    result = load(name).main(TINY[name] + ["--seed", "0", "--device", "cpu"])
    assert "loss" in capsys.readouterr().out            # it reported progress
    before, after = result["loss_before"], result["loss_after"]
    assert isinstance(before, float) and isinstance(after, float)
    assert np.isfinite([before, after]).all()
    assert after < before, (name, before, after)


def test_vanishing_gradients(tmp_path):
    out = tmp_path / "vanishing.png"
    seq_len, clip = 100, 1.0
    result = load("vanishing_gradients").main(
        ["--steps", "100", "--seq-len", str(seq_len), "--clip", str(clip), "--seed", "0",
         "--out", str(out)])
    assert out.is_file() and out.stat().st_size > 0

    norms = result["grad_norms"]
    assert set(norms) >= {"rnn", "gru", "lstm", "rnn_exploding"}
    for name, n in norms.items():
        assert n.shape == (seq_len,) and np.isfinite(n).all(), name
    # How much of the last step's gradient still reaches the first input.
    reach = {name: n[0] / n[-1] for name, n in norms.items()}
    assert reach["lstm"] > reach["rnn"]
    assert reach["rnn"] < 1e-10                           # tanh RNN: vanished
    assert reach["rnn_exploding"] > 1e3                   # spectral radius 3: exploded

    assert result["grad_norm_before_clip"] > 10 * clip    # clipping had work to do
    assert result["grad_norm_after_clip"] <= clip * (1 + 1e-6)
    assert result["update_size_clipped"] < result["update_size_unclipped"]
    assert result["loss_after"] < result["loss_before"]
