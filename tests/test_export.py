"""torch.export of models with fusedrnn modules: one op per layer, run_decompositions() lowers it
to aten ops, and the decomposed program saves, loads and runs in a process without fusedrnn."""

import subprocess
import sys

import torch

import fusedrnn
from conftest import assert_rel_close

BACKENDS = ["reference", "torch", "triton-step", "triton-persistent"]


class Encoder(torch.nn.Module):
    """A 2-layer bidirectional batch-first LSTM with a given state, then a GRU and an RNN."""

    def __init__(self, backend):
        super().__init__()
        self.lstm = fusedrnn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True,
                                  backend=backend)
        self.gru = fusedrnn.GRU(10, 3, backend=backend)
        self.rnn = fusedrnn.RNN(3, 2, nonlinearity="relu", backend=backend)

    def forward(self, x, h0, c0):
        y, (h, c) = self.lstm(x, (h0, c0))
        z, hg = self.gru(y.transpose(0, 1))
        r, hr = self.rnn(z)
        return r, h, c, hg, hr


def _example(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, 3, generator=g), torch.randn(4, 2, 5, generator=g),
            torch.randn(4, 2, 5, generator=g))


def _ops(ep):
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def test_export_decompose_save_and_load_without_fusedrnn(tmp_path):
    args = _example()
    torch.manual_seed(0)
    reference_weights = Encoder("reference").state_dict()
    paths, wants = [], []
    for backend in BACKENDS:
        model = Encoder(backend).eval()
        model.load_state_dict(reference_weights)
        want = model(*args)
        ep = torch.export.export(model, args)
        ops = _ops(ep)
        assert "fusedrnn.layer_export.default" in ops, ops
        assert not any("autocast" in op for op in ops), ops
        for a, b in zip(ep.module()(*args), want):
            assert_rel_close(a, b, torch.float32, f"{backend} exported program")
        decomposed = ep.run_decompositions()
        assert not any(op.startswith("fusedrnn") for op in _ops(decomposed)), _ops(decomposed)
        for a, b in zip(decomposed.module()(*args), want):
            assert_rel_close(a, b, torch.float32, f"{backend} decomposed program")
        path = tmp_path / f"{backend}.pt2"
        torch.export.save(decomposed, path)
        paths.append(str(path))
        wants.append(want)

    args_path = tmp_path / "args.pt"
    torch.save(args, args_path)
    out_path = tmp_path / "outputs.pt"
    script = (
        "import sys, torch\n"
        f"args = torch.load({str(args_path)!r})\n"
        f"outs = [torch.export.load(p).module()(*args) for p in {paths!r}]\n"
        "assert not any(m.startswith('fusedrnn') for m in sys.modules), 'fusedrnn was imported'\n"
        f"torch.save(outs, {str(out_path)!r})\n"
    )
    # A fresh interpreter outside the repository, so neither the package nor tests/ is on its path.
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=300)
    for backend, got, want in zip(BACKENDS, torch.load(out_path), wants):
        for i, (a, b) in enumerate(zip(got, want)):
            # The composite in fp32 against the backend's kernel in fp32: fp32 tolerance.
            assert_rel_close(a, b, torch.float32, f"{backend} output {i} in the fresh process")
