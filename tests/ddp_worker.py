"""One rank of the DDP test (tests/test_ddp.py): ``python ddp_worker.py RANK WORLD PORT OUT``.

Trains the test's model under DistributedDataParallel (gloo, loopback) on its shard of the batch
for every backend in turn and saves the final parameters to ``OUT``."""

import sys

import torch
import torch.distributed as dist

from ddp_case import BACKENDS, STEPS, batch, make_model, train_step


def main(rank, world, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        results = {}
        for backend in BACKENDS:
            model = torch.nn.parallel.DistributedDataParallel(make_model(backend))
            opt = torch.optim.SGD(model.parameters(), lr=0.5)
            for step in range(STEPS):
                x, target = batch(step)
                shard = x.shape[1] // world
                rows = slice(rank * shard, (rank + 1) * shard)
                train_step(model, opt, x[:, rows], target[:, rows])
            results[backend] = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
        torch.save(results, out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
