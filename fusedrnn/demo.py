"""``python -m fusedrnn demo``: train a character-level language model with fusedrnn and with
``torch.nn`` side by side, then sample text from the fusedrnn model.

Both models start from the same weights and see the same batches, so their losses should
agree (up to float rounding) while the throughput shows what the backend buys. The training
text, the first part of Tiny Shakespeare, ships inside the package (``fusedrnn/data``).
"""

import math
import time
from importlib import resources

import torch
import torch.nn.functional as F
from torch import nn

from . import modules

CELLS = {"lstm": (nn.LSTM, modules.LSTM), "gru": (nn.GRU, modules.GRU), "rnn": (nn.RNN, modules.RNN)}

# Defaults per device. CPU: trains both models in about a minute on 2 idle cores (measured:
# 0.07 s per step of the pair, 500 steps ≈ 40 s) and shows the loss falling to ~1.5 nats with
# word-like samples. GPU: large enough (H ≥ 512) that the recurrence dominates; not yet timed
# on a GPU.
DEFAULTS = {
    "cpu": dict(hidden=256, layers=1, seq_len=64, batch=32, steps=500),
    "cuda": dict(hidden=1024, layers=2, seq_len=128, batch=64, steps=1000),
}


def load_text():
    return resources.files("fusedrnn.data").joinpath("tinyshakespeare.txt").read_text("utf-8")


class CharLM(nn.Module):
    """Embedding → recurrent stack → linear read-out over the character vocabulary."""

    def __init__(self, rnn_cls, vocab, hidden, layers, **rnn_kwargs):
        super().__init__()
        self.embed = nn.Embedding(vocab, min(hidden, 128))
        self.rnn = rnn_cls(self.embed.embedding_dim, hidden, num_layers=layers, batch_first=True,
                           **rnn_kwargs)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens, state=None):
        y, state = self.rnn(self.embed(tokens), state)
        return self.head(y), state


def batches(data, batch, seq_len, steps, seed, device):
    """``steps`` random windows of ``seq_len + 1`` characters, the same for every call."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - seq_len - 1, (batch,), generator=g)
        window = torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()]).to(device)
        yield window[:, :-1], window[:, 1:]


def evaluate(model, data, seq_len, device, windows=16):
    with torch.no_grad():
        x, y = next(batches(data, windows, seq_len, 1, seed=12345, device=device))
        logits, _ = model(x)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten()).item()


def train_lockstep(models, data, args, device, progress=True):
    """Train every model on the same batches, alternating steps, so they meet the same machine
    conditions and their timings compare fairly. Adam with gradient-norm clipping at 1.0 (the
    usual char-RNN recipe). Returns ``{label: (first loss, final loss, tokens per second)}``;
    the first step (warm-up, compilation) is left out of the timing."""
    from tqdm.auto import tqdm

    opts = {label: torch.optim.Adam(m.parameters(), lr=args.lr) for label, m in models.items()}
    losses = {label: [] for label in models}
    seconds = dict.fromkeys(models, 0.0)
    bar = tqdm(batches(data, args.batch, args.seq_len, args.steps, args.seed, device),
               total=args.steps, disable=not progress, leave=True)
    for step, (x, y) in enumerate(bar):
        for label, model in models.items():
            start = time.perf_counter()
            logits, _ = model(x)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            opts[label].zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opts[label].step()
            losses[label].append(loss.item())   # .item() waits for the GPU: the step is done
            if step > 0:
                seconds[label] += time.perf_counter() - start
        if step % 10 == 0 or step == args.steps - 1:
            postfix = {}
            for label in models:
                postfix[f"{label} loss"] = f"{losses[label][-1]:.3f}"
                if seconds[label] > 0:
                    rate = args.batch * args.seq_len * step / seconds[label]
                    postfix[f"{label} tok/s"] = f"{rate:,.0f}"
            bar.set_postfix(postfix)
    tokens = args.batch * args.seq_len * (args.steps - 1)
    return {
        label: (losses[label][0], sum(losses[label][-10:]) / len(losses[label][-10:]),
                tokens / seconds[label] if seconds[label] > 0 else float("nan"))
        for label in models
    }


def sample(model, stoi, itos, prompt, length, temperature, device, seed):
    """Temperature sampling: feed the prompt, then draw each next character from
    softmax(logits / temperature), carrying the recurrent state between steps."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    model.eval()
    out = list(prompt)
    with torch.no_grad():
        tokens = torch.tensor([[stoi[c] for c in prompt]], device=device)
        logits, state = model(tokens)
        for _ in range(length):
            probs = F.softmax(logits[0, -1].float().cpu() / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=g).item()
            out.append(itos[nxt])
            logits, state = model(torch.tensor([[nxt]], device=device), state)
    model.train()
    return "".join(out)


def run(args):
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for key, value in DEFAULTS["cuda" if device.type == "cuda" else "cpu"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    text = load_text()
    vocab = sorted(set(text))
    stoi = {c: i for i, c in enumerate(vocab)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    split = int(0.9 * len(data))
    train_data, val_data = data[:split], data[split:]

    torch_cls, fused_cls = CELLS[args.cell]
    torch.manual_seed(args.seed)
    baseline = CharLM(torch_cls, len(vocab), args.hidden, args.layers).to(device)
    fused = CharLM(fused_cls, len(vocab), args.hidden, args.layers, backend=args.backend).to(device)
    fused.load_state_dict(baseline.state_dict())       # the same starting point

    print(f"text: {len(text):,} characters, vocabulary {len(vocab)}; device {device}")
    print(f"model: {args.cell.upper()} hidden={args.hidden} layers={args.layers}; "
          f"batch={args.batch} seq_len={args.seq_len} steps={args.steps}; "
          f"fusedrnn backend {args.backend!r} runs {fused.rnn.resolved_backend()!r}")
    print(f"uniform guessing would score {math.log(len(vocab)):.3f} nats")
    trained = train_lockstep({"fusedrnn": fused, "torch.nn": baseline}, train_data, args, device,
                             progress=not args.quiet)
    results = {label: (first, last, evaluate(model, val_data, args.seq_len, device), rate)
               for (label, (first, last, rate)), model in zip(trained.items(), (fused, baseline))}
    print(f"\n{'':10}{'first loss':>12}{'final loss':>12}{'val loss':>10}{'tokens/s':>12}"
          "   (final: mean of the last 10 steps)")
    for label, (first, last, val, rate) in results.items():
        print(f"{label:10}{first:12.3f}{last:12.3f}{val:10.3f}{rate:12,.0f}")
    speedup = results["fusedrnn"][3] / results["torch.nn"][3]
    print(f"fusedrnn / torch.nn throughput: {speedup:.2f}x")
    text_out = sample(fused, stoi, vocab, args.prompt, args.sample_len, args.temperature, device,
                      args.seed)
    print(f"\nsample (temperature {args.temperature}):\n{text_out}")
    return results


def add_arguments(parser):
    parser.add_argument("--cell", choices=sorted(CELLS), default="lstm")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt", default="ROMEO:\n")
    parser.add_argument("--sample-len", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
