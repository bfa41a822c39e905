"""Synced many-to-many: tag every position of a sequence with a bidirectional GRU.

Task: the input is a string of random digits 0-9. Position t is tagged 1 when its digit is a
strict local maximum -- larger than the digit on its left *and* the digit on its right (a
missing neighbour at either end counts as smaller) -- and 0 otherwise. A left-to-right RNN
cannot know the right neighbour when it has to emit the tag, so the tagger reads the string
in both directions.

Shape: many inputs -> one output per input, aligned in time.

    digits [B, T] --embed--> [B, T, E] --fusedrnn.GRU(bidirectional)--> [B, T, 2H]
                                                               --Linear--> logits [B, T, 2]

    python examples/many_to_many_tagging.py --steps 50 --backend reference
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import fusedrnn

VOCAB = 10


def make_batch(batch, length, generator):
    """Digits [B, T] and tags [B, T]: 1 where the digit beats both of its neighbours."""
    digits = torch.randint(0, VOCAB, (batch, length), generator=generator)
    edge = torch.full((batch, 1), -1)
    left = torch.cat([edge, digits[:, :-1]], dim=1)
    right = torch.cat([digits[:, 1:], edge], dim=1)
    tags = ((digits > left) & (digits > right)).long()
    return digits, tags


class Tagger(nn.Module):
    def __init__(self, hidden, backend):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.rnn = fusedrnn.GRU(16, hidden, batch_first=True, bidirectional=True, backend=backend)
        self.head = nn.Linear(2 * hidden, 2)   # forward and backward states, concatenated

    def forward(self, digits):
        out, _ = self.rnn(self.embed(digits))  # out: [B, T, 2H]
        return self.head(out)                  # [B, T, 2]


def evaluate(model, batch, device):
    digits, tags = batch
    with torch.no_grad():
        logits = model(digits.to(device))
        loss = F.cross_entropy(logits.flatten(0, 1), tags.to(device).flatten()).item()
        accuracy = (logits.argmax(-1).cpu() == tags).float().mean().item()
    return loss, accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="auto", choices=fusedrnn.BACKENDS)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch; models this small run fastest on one")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=24)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = Tagger(args.hidden, args.backend).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    eval_batch = make_batch(256, args.length, generator)
    majority = 1 - eval_batch[1].float().mean().item()   # accuracy of always answering 0

    loss_before, acc_before = evaluate(model, eval_batch, args.device)
    print(f"tag local maxima in digit strings of length {args.length}; bidirectional GRU "
          f"hidden={args.hidden}, backend={args.backend!r}")
    print(f"before: eval loss {loss_before:.3f}, accuracy {acc_before:.1%} "
          f"(always-0 baseline {majority:.1%})")
    for step in range(1, args.steps + 1):
        digits, tags = make_batch(args.batch, args.length, generator)
        logits = model(digits.to(args.device))
        loss = F.cross_entropy(logits.flatten(0, 1), tags.to(args.device).flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 4) == 0 or step == args.steps:
            print(f"step {step:4d}: train loss {loss.item():.3f}")
    loss_after, acc_after = evaluate(model, eval_batch, args.device)
    print(f"after:  eval loss {loss_after:.3f}, accuracy {acc_after:.1%}")
    example_digits, example_tags = eval_batch[0][0], eval_batch[1][0]
    with torch.no_grad():
        predicted = model(example_digits[None].to(args.device)).argmax(-1)[0].cpu()
    print(f"digits    {' '.join(map(str, example_digits.tolist()))}")
    print(f"tags      {' '.join(map(str, example_tags.tolist()))}")
    print(f"predicted {' '.join(map(str, predicted.tolist()))}")
    return {"loss_before": loss_before, "loss_after": loss_after,
            "accuracy_before": acc_before, "accuracy_after": acc_after, "majority": majority}


if __name__ == "__main__":
    main()
