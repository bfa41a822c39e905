"""Sequence to sequence: an LSTM encoder-decoder that reverses digit strings.

Task: read a string of --length random digits and write it back reversed ("40721" -> "12704").
(--task sort asks for the digits in ascending order instead.)

Shape: many inputs -> many outputs, not aligned in time. The encoder reads the whole input and
hands its final state (h_n, c_n) -- a fixed-size summary -- to the decoder as its initial state;
the decoder then writes the output one digit at a time:

    source [B, S] --embed--> fusedrnn.LSTM (encoder) --> (h_n, c_n)
    [BOS, y0, y1, ...] --embed--> fusedrnn.LSTM (decoder, starts from (h_n, c_n))
                                                --Linear--> logits for [y0, y1, y2, ...]

Training feeds the decoder the true previous digits (teacher forcing); evaluation decodes
greedily, one T=1 step at a time, feeding back its own predictions. Without attention the
whole input has to fit through (h_n, c_n), which is what limits plain encoder-decoders on
long inputs.

    python examples/encoder_decoder.py --steps 50 --backend reference
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import fusedrnn

VOCAB, BOS = 10, 10


def make_batch(batch, length, task, generator):
    source = torch.randint(0, VOCAB, (batch, length), generator=generator)
    target = source.flip(1) if task == "reverse" else source.sort(1).values
    return source, target


class Seq2Seq(nn.Module):
    def __init__(self, hidden, backend):
        super().__init__()
        self.src_embed = nn.Embedding(VOCAB, 32)
        self.tgt_embed = nn.Embedding(VOCAB + 1, 32)
        self.encoder = fusedrnn.LSTM(32, hidden, batch_first=True, backend=backend)
        self.decoder = fusedrnn.LSTM(32, hidden, batch_first=True, backend=backend)
        self.head = nn.Linear(hidden, VOCAB)

    def encode(self, source):
        _, state = self.encoder(self.src_embed(source))      # state = (h_n, c_n), [1, B, H] each
        return state

    def forward(self, source, target):
        """Teacher-forced logits [B, T, VOCAB]."""
        bos = torch.full_like(target[:, :1], BOS)
        out, _ = self.decoder(self.tgt_embed(torch.cat([bos, target[:, :-1]], 1)),
                              self.encode(source))
        return self.head(out)

    @torch.no_grad()
    def greedy_decode(self, source, length):
        state = self.encode(source)
        token = torch.full_like(source[:, :1], BOS)
        outputs = []
        for _ in range(length):
            out, state = self.decoder(self.tgt_embed(token), state)
            token = self.head(out).argmax(-1)                 # [B, 1]
            outputs.append(token)
        return torch.cat(outputs, 1)


def evaluate(model, batch, device):
    source, target = (t.to(device) for t in batch)
    with torch.no_grad():
        loss = F.cross_entropy(model(source, target).flatten(0, 1), target.flatten()).item()
    decoded = model.greedy_decode(source, target.shape[1])
    token_acc = (decoded == target).float().mean().item()
    seq_acc = (decoded == target).all(1).float().mean().item()
    return loss, token_acc, seq_acc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="auto", choices=fusedrnn.BACKENDS)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch; models this small run fastest on one")
    parser.add_argument("--task", choices=("reverse", "sort"), default="reverse")
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = Seq2Seq(args.hidden, args.backend).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    eval_batch = make_batch(512, args.length, args.task, generator)

    loss_before, tok_before, _ = evaluate(model, eval_batch, args.device)
    print(f"{args.task} {args.length}-digit strings; LSTM encoder-decoder hidden={args.hidden}, "
          f"backend={args.backend!r}")
    print(f"before: eval loss {loss_before:.3f}, token accuracy {tok_before:.1%}")
    for step in range(1, args.steps + 1):
        source, target = (t.to(args.device) for t in
                          make_batch(args.batch, args.length, args.task, generator))
        loss = F.cross_entropy(model(source, target).flatten(0, 1), target.flatten())
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % max(1, args.steps // 4) == 0 or step == args.steps:
            print(f"step {step:4d}: train loss {loss.item():.3f}")
    loss_after, tok_after, seq_after = evaluate(model, eval_batch, args.device)
    print(f"after:  eval loss {loss_after:.3f}, token accuracy {tok_after:.1%}, "
          f"whole strings right {seq_after:.1%}")
    source = eval_batch[0][:3].to(args.device)
    for src, out in zip(source.tolist(), model.greedy_decode(source, args.length).tolist()):
        print(f"  {''.join(map(str, src))} -> {''.join(map(str, out))}")
    return {"loss_before": loss_before, "loss_after": loss_after,
            "token_accuracy_before": tok_before, "token_accuracy_after": tok_after,
            "sequence_accuracy_after": seq_after}


if __name__ == "__main__":
    main()
