"""The model, data and training step shared by the DDP test and its worker processes."""

import torch

import fusedrnn

BACKENDS = ["reference", "torch", "triton-step", "triton-persistent"]
STEPS = 3


def make_model(backend):
    """A 2-layer bidirectional LSTM with a linear head, identical on every rank (fixed seed)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        fusedrnn.LSTM(2, 3, num_layers=2, bidirectional=True, backend=backend), Head())


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 1)

    def forward(self, rnn_out):
        return self.linear(rnn_out[0])


def batch(step):
    """``(x [T=3, B=4, 2], target [3, 4, 1])`` for a step; every rank sees the same full batch."""
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(3, 4, 2, generator=g), torch.randn(3, 4, 1, generator=g)


def train_step(model, opt, x, target):
    opt.zero_grad()
    # Mean over the local rows: DDP averages gradients over ranks, so equal shards give the
    # full-batch mean's gradient.
    torch.nn.functional.mse_loss(model(x), target).backward()
    opt.step()
