"""``python -m fusedrnn``: the command line.

``demo`` trains a character-level language model with fusedrnn and with ``torch.nn`` side by
side and samples text (see :mod:`fusedrnn.demo`). ``quickstart`` runs a fusedrnn LSTM forward
and backward on random data, prints the shapes, the backend that ran, and its agreement with
``torch.nn.LSTM`` holding the same weights.
"""

import argparse
import time

import torch

from . import benchmark, demo, gpucheck
from .backends import registry as backend_registry
from .modules import LSTM


def quickstart(args):
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    model = LSTM(args.input, args.hidden, num_layers=args.layers, batch_first=True,
                 backend=args.backend).to(device)
    baseline = torch.nn.LSTM(args.input, args.hidden, num_layers=args.layers, batch_first=True).to(device)
    baseline.load_state_dict(model.state_dict())
    x = torch.randn(args.batch, args.seq_len, args.input, device=device)
    ran = model.resolved_backend()

    start = time.perf_counter()
    out, (h_n, c_n) = model(x)
    out.square().mean().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    ref_out, _ = baseline(x)
    max_diff = (out - ref_out).abs().max().item()

    print(f"fusedrnn {model}")
    print(f"device          {device}")
    print(f"backend         {args.backend!r} -> ran {ran!r}")
    print(f"input           {tuple(x.shape)}  (batch, time, features)")
    print(f"output          {tuple(out.shape)}")
    print(f"h_n, c_n        {tuple(h_n.shape)}, {tuple(c_n.shape)}")
    print(f"grad weight_hh  {tuple(model.weight_hh_l0.grad.shape)}")
    print(f"fwd+bwd         {elapsed * 1e3:.1f} ms (first call, includes any compilation)")
    print(f"max |out - torch.nn.LSTM| = {max_diff:.2e}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fusedrnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quickstart", help="run a fusedrnn LSTM and report shapes and backend")
    q.add_argument("--backend", default="auto", choices=backend_registry.NAMES)
    q.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    q.add_argument("--batch", type=int, default=4)
    q.add_argument("--seq-len", type=int, default=16)
    q.add_argument("--input", type=int, default=8)
    q.add_argument("--hidden", type=int, default=32)
    q.add_argument("--layers", type=int, default=2)
    q.set_defaults(run=quickstart)
    d = sub.add_parser("demo", help="train a character-level language model, fusedrnn vs torch.nn")
    demo.add_arguments(d)
    d.set_defaults(run=demo.run)
    b = sub.add_parser("bench", help="run the throughput grid: table, JSON and plot")
    benchmark.add_arguments(b)
    b.set_defaults(run=benchmark.run)
    g = sub.add_parser("gpucheck", help="one device call: environment, floors, compile, "
                       "correctness of every fused backend, timing against torch.nn")
    gpucheck.add_arguments(g)
    g.set_defaults(run=gpucheck.run)
    args = parser.parse_args(argv)
    return args.run(args)
