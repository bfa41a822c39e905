"""One-to-many: generate a whole sequence from a single seed.

Task: the seed (a class id; unrelated to the --seed flag, which seeds the RNGs) stands for a
pair (start, stride), start in 0-9 and stride in 1..--strides. The model must emit the arithmetic sequence

    start, start + stride, start + 2*stride, ...   (mod 10),  --length digits long.

Shape: one input -> many outputs. The seed is embedded straight into the initial hidden state
h0; after that the GRU is fed its own previous digit (a BOS token at the first step):

    seed [B] --Embedding, tanh--> h0 [1, B, H]
    [BOS, d0, d1, ...] --embed--> fusedrnn.GRU(h0) --Linear--> logits for [d0, d1, d2, ...]

Training uses teacher forcing: the true previous digits are fed, all steps in one call.
Generation runs the same module one step at a time (input length T=1), feeding back the
argmax and carrying the hidden state from step to step.

    python examples/one_to_many_generation.py --steps 50 --backend reference
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import fusedrnn

VOCAB, BOS = 10, 10          # digits 0-9, plus a begin-of-sequence input token


def sequences(seeds, strides, length):
    """Target digits [B, length] for seed ids [B]; seed = start * strides + (stride - 1)."""
    start, stride = seeds // strides, seeds % strides + 1
    return (start[:, None] + stride[:, None] * torch.arange(length)) % VOCAB


class SequenceGenerator(nn.Module):
    def __init__(self, num_seeds, hidden, backend):
        super().__init__()
        self.seed_to_h0 = nn.Embedding(num_seeds, hidden)
        self.embed = nn.Embedding(VOCAB + 1, 16)
        self.rnn = fusedrnn.GRU(16, hidden, batch_first=True, backend=backend)
        self.head = nn.Linear(hidden, VOCAB)

    def initial_state(self, seeds):
        return torch.tanh(self.seed_to_h0(seeds))[None]       # [1, B, H]

    def forward(self, inputs, h):
        out, h = self.rnn(self.embed(inputs), h)             # inputs [B, T] -> out [B, T, H]
        return self.head(out), h

    def teacher_forced_logits(self, seeds, targets):
        bos = torch.full_like(targets[:, :1], BOS)
        logits, _ = self(torch.cat([bos, targets[:, :-1]], dim=1), self.initial_state(seeds))
        return logits

    @torch.no_grad()
    def generate(self, seeds, length):
        h = self.initial_state(seeds)
        token = torch.full((len(seeds), 1), BOS, device=seeds.device)
        digits = []
        for _ in range(length):                              # one T=1 call per digit
            logits, h = self(token, h)
            token = logits.argmax(-1)                        # [B, 1]
            digits.append(token)
        return torch.cat(digits, dim=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="auto", choices=fusedrnn.BACKENDS)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch; models this small run fastest on one")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=12)
    parser.add_argument("--strides", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    num_seeds = VOCAB * args.strides
    model = SequenceGenerator(num_seeds, args.hidden, args.backend).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    all_seeds = torch.arange(num_seeds, device=args.device)   # the evaluation batch: every seed
    all_targets = sequences(all_seeds.cpu(), args.strides, args.length).to(args.device)

    def eval_loss():
        with torch.no_grad():
            logits = model.teacher_forced_logits(all_seeds, all_targets)
            return F.cross_entropy(logits.flatten(0, 1), all_targets.flatten()).item()

    loss_before = eval_loss()
    print(f"generate {args.length}-digit arithmetic sequences mod 10 from one of {num_seeds} "
          f"seeds; GRU hidden={args.hidden}, backend={args.backend!r}")
    print(f"before: eval loss {loss_before:.3f}")
    for step in range(1, args.steps + 1):
        seeds = torch.randint(0, num_seeds, (args.batch,), generator=generator)
        targets = sequences(seeds, args.strides, args.length).to(args.device)
        logits = model.teacher_forced_logits(seeds.to(args.device), targets)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 4) == 0 or step == args.steps:
            print(f"step {step:4d}: train loss {loss.item():.3f}")
    loss_after = eval_loss()
    generated = model.generate(all_seeds, args.length)
    exact = (generated == all_targets).all(1).float().mean().item()
    print(f"after:  eval loss {loss_after:.3f}; free-running generation exactly right for "
          f"{exact:.0%} of the seeds")
    for seed in (7, num_seeds - 1):
        start, stride = divmod(seed, args.strides)
        print(f"start {start} stride {stride + 1}: {''.join(map(str, generated[seed].tolist()))}")
    return {"loss_before": loss_before, "loss_after": loss_after, "exact_match": exact}


if __name__ == "__main__":
    main()
