"""Many-to-one: classify variable-length sequences from the final hidden state.

Task: each input is a sequence of random digits 0-9 whose length is drawn uniformly from
[1, --max-len]. The label is how many times the digit 0 occurs, capped at 3 (four classes:
0, 1, 2, "3 or more"). The model has to count across the whole sequence and report once.

Shape: many inputs -> one output.

    digits [B, T] --embed--> [B, T, E] --pack_padded_sequence--> fusedrnn.LSTM
                  --> h_n[-1] [B, H] (state after each sequence's last digit)
                  --Linear--> logits [B, 4]

The batch is padded to the longest sequence and packed with ``enforce_sorted=False``, so the
LSTM stops at each sequence's own last step: ``h_n`` holds the state after the last *real*
digit (in the original batch order), never after padding.

    python examples/many_to_one_classification.py --steps 50 --backend reference
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn

VOCAB, NUM_CLASSES, COUNTED_DIGIT = 10, 4, 0


def make_batch(batch, max_len, generator):
    """Padded digits [B, max_len], true lengths [B] (uniform in [1, max_len]) and labels [B]."""
    lengths = torch.randint(1, max_len + 1, (batch,), generator=generator)
    digits = torch.randint(0, VOCAB, (batch, max_len), generator=generator)
    mask = torch.arange(max_len) < lengths[:, None]
    digits = digits * mask      # pad with 0, the counted digit: reading padding would miscount
    labels = ((digits == COUNTED_DIGIT) & mask).sum(1).clamp(max=NUM_CLASSES - 1)
    return digits, lengths, labels


class Classifier(nn.Module):
    def __init__(self, hidden, backend):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.rnn = fusedrnn.LSTM(16, hidden, batch_first=True, backend=backend)
        self.head = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, digits, lengths):
        # Lengths stay on the CPU (torch's rule for pack_padded_sequence).
        packed = pack_padded_sequence(self.embed(digits), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, (h_n, _) = self.rnn(packed)         # h_n: [num_layers, B, H], original batch order
        return self.head(h_n[-1])


def evaluate(model, batch, device):
    digits, lengths, labels = batch
    with torch.no_grad():
        logits = model(digits.to(device), lengths)
        loss = F.cross_entropy(logits, labels.to(device)).item()
        accuracy = (logits.argmax(1).cpu() == labels).float().mean().item()
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
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--lr", type=float, default=5e-3)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = Classifier(args.hidden, args.backend).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    eval_batch = make_batch(512, args.max_len, generator)

    loss_before, acc_before = evaluate(model, eval_batch, args.device)
    print(f"count the {COUNTED_DIGIT}s (capped at {NUM_CLASSES - 1}) in digit strings of length "
          f"1..{args.max_len}; LSTM hidden={args.hidden}, backend={args.backend!r}")
    print(f"before: eval loss {loss_before:.3f}, accuracy {acc_before:.1%}")
    for step in range(1, args.steps + 1):
        digits, lengths, labels = make_batch(args.batch, args.max_len, generator)
        loss = F.cross_entropy(model(digits.to(args.device), lengths), labels.to(args.device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 4) == 0 or step == args.steps:
            print(f"step {step:4d}: train loss {loss.item():.3f}")
    loss_after, acc_after = evaluate(model, eval_batch, args.device)
    print(f"after:  eval loss {loss_after:.3f}, accuracy {acc_after:.1%}")
    return {"loss_before": loss_before, "loss_after": loss_after,
            "accuracy_before": acc_before, "accuracy_after": acc_after}


if __name__ == "__main__":
    main()
