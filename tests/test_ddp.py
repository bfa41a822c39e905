"""DistributedDataParallel: 2 CPU processes (gloo, loopback only) train a 2-layer bidirectional
LSTM for a few steps on every backend; the parameters must equal a single-process run's."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from conftest import assert_rel_close
from ddp_case import BACKENDS, STEPS, batch, make_model, train_step

WORLD = 2


def _free_loopback_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_matches_single_process(tmp_path):
    tests_dir = Path(__file__).parent
    port = _free_loopback_port()
    # Loopback only: gloo would otherwise pick the interface its hostname resolves to, which on
    # many machines is the host's own address, not 127.0.0.1.
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo",
               PYTHONPATH=os.pathsep.join([str(tests_dir), os.environ.get("PYTHONPATH", "")]))
    outs = [tmp_path / f"rank{r}.pt" for r in range(WORLD)]
    procs = [subprocess.Popen([sys.executable, str(tests_dir / "ddp_worker.py"), str(r), str(WORLD),
                               str(port), str(outs[r])], env=env) for r in range(WORLD)]
    try:
        for p in procs:
            assert p.wait(timeout=240) == 0, "a DDP rank failed"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    ranks = [torch.load(o) for o in outs]
    for backend in BACKENDS:
        model = make_model(backend)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for step in range(STEPS):
            train_step(model, opt, *batch(step))
        for name, want in model.state_dict().items():
            for r in range(WORLD):
                # fp32 everywhere; the all-reduce sums two half-batch means in another order.
                assert_rel_close(ranks[r][backend][name], want, torch.float32,
                                 f"{backend} rank {r} {name}")
