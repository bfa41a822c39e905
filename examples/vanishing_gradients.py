"""Vanishing and exploding gradients through time, and gradient-norm clipping.

Shape: one long sequence (--seq-len 200 steps) -> one output. The loss L depends only on the
output at the last step, so dL/dx_t measures how much the input at step t can still influence
(and be trained by) that loss. Back-propagation multiplies one Jacobian per step:

* Elman RNN (tanh): dh_t/dh_{t-1} = diag(1 - h_t^2) W_hh. With torch's default initialisation
  W_hh has spectral radius ~0.6, so ||dL/dx_t|| shrinks geometrically -- it *vanishes*.
* GRU and LSTM: the state is carried additively, scaled by a gate (GRU update gate z,
  LSTM forget gate f). Where the gate is near 1 the gradient passes almost untouched. We set
  that gate's bias to --gate-bias (1.0: the usual LSTM forget-bias initialisation) so the
  gates start open; --gate-bias 0 shows the plain default initialisation.
* Elman RNN with W_hh rescaled to spectral radius --radius (3): the tanh network is chaotic,
  the Jacobian product grows and the gradient *explodes*. torch.nn.utils.clip_grad_norm_
  rescales the whole gradient to norm <= --clip, which bounds every SGD update. The script
  trains that model with clipped SGD (--steps) to read the last input back out of its last
  output, on windows of --train-len steps: over all 200 steps the far-past terms, astronomically
  large and chaotic, fill the whole clipped gradient and training stalls -- clipping stops the
  blow-up, it does not make those terms useful (hence truncated back-propagation in practice).

Computed in float64 (--dtype) so that norms of 1e-50 do not underflow. Writes --out (PNG).

    python examples/vanishing_gradients.py --out /tmp/vanishing.png
"""

import argparse

import matplotlib
import torch
import torch.nn.functional as F
from torch import nn

import fusedrnn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)


def input_grad_norms(rnn, x):
    """||dL/dx_t|| for every t, where L = sum of the outputs at the last step."""
    x = x.clone().requires_grad_()
    out, _ = rnn(x)                                          # x, out: [T, 1, features]
    out[-1].sum().backward()
    return x.grad.norm(dim=(1, 2)).cpu().numpy()


class Regressor(nn.Module):
    """The exploding RNN plus a linear read-out of its last output."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(rnn.hidden_size, 1, dtype=rnn.weight_hh_l0.dtype)

    def forward(self, x):
        return self.head(self.rnn(x)[0][-1]).squeeze(-1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="auto", choices=fusedrnn.BACKENDS)
    parser.add_argument("--steps", type=int, default=150, help="clipped SGD steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch; models this small run fastest on one")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--seq-len", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--gate-bias", type=float, default=1.0)
    parser.add_argument("--radius", type=float, default=3.0)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--train-len", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--out", default="vanishing_gradients.png")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    kw = dict(device=args.device, dtype=getattr(torch, args.dtype), backend=args.backend)
    H, inputs = args.hidden, 8
    x = torch.randn(args.seq_len, 1, inputs, device=args.device, dtype=kw["dtype"])
    rnn, gru, lstm = (cls(inputs, H, **kw) for cls in (fusedrnn.RNN, fusedrnn.GRU, fusedrnn.LSTM))
    exploding = fusedrnn.RNN(inputs, H, nonlinearity="tanh", **kw)
    with torch.no_grad():
        gru.bias_ih_l0[H:2 * H] += args.gate_bias       # gate order: GRU (r, z, n),
        lstm.bias_ih_l0[H:2 * H] += args.gate_bias      # LSTM (i, f, g, o)
        w = exploding.weight_hh_l0
        w *= args.radius / torch.linalg.eigvals(w.cpu()).abs().max().item()
    norms = {"rnn": input_grad_norms(rnn, x), "gru": input_grad_norms(gru, x),
             "lstm": input_grad_norms(lstm, x), "rnn_exploding": input_grad_norms(exploding, x)}
    print(f"||dL/dx_t|| over T={args.seq_len} steps, L = last output ({args.dtype}, "
          f"backend={args.backend!r}):")
    for name, n in norms.items():
        print(f"  {name:14s} t=T-1: {n[-1]:9.2e}   t=0: {n[0]:9.2e}   ratio {n[0] / n[-1]:9.2e}")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, label in (("rnn", "RNN (tanh)"), ("gru", "GRU"), ("lstm", "LSTM")):
        ax1.semilogy(norms[name], label=label)
    ax1.set_title(f"vanishing (default init, gate bias {args.gate_bias:g})")
    ax2.semilogy(norms["rnn_exploding"], color="C3", label=f"RNN (tanh), radius {args.radius:g}")
    ax2.set_title("exploding")
    for ax in (ax1, ax2):
        ax.set_xlabel("input step t")
        ax.set_ylabel("||dL/dx_t||  (L: last output only)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"plot written to {args.out}")

    # Training the exploding RNN: clipped SGD on windows of --train-len steps, predicting the
    # first input feature of the last step from the last output.
    model = Regressor(exploding).to(args.device)
    gen = torch.Generator().manual_seed(args.seed + 1)

    def batch(size):
        return torch.randn(args.train_len, size, inputs, generator=gen).to(x)

    eval_x = batch(256)
    with torch.no_grad():
        loss_before = F.mse_loss(model(eval_x), eval_x[-1, :, 0]).item()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    print(f"clipped SGD on the exploding RNN, windows of {args.train_len} steps, "
          f"eval loss {loss_before:.3f}")
    for step in range(1, args.steps + 1):
        xs = batch(32)
        loss = F.mse_loss(model(xs), xs[-1, :, 0])
        optimizer.zero_grad()
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), args.clip).item()   # norm before
        if step == 1:
            clipped = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
            print(f"  step 1: gradient norm {norm:.3e} -> {clipped:.3e} after "
                  f"clip_grad_norm_(max_norm={args.clip:g})")
            print(f"          SGD update size (lr {args.lr:g}): {args.lr * norm:.3e} unclipped, "
                  f"{args.lr * clipped:.3e} clipped")
            first = dict(before=norm, after=clipped)
        optimizer.step()
        if step % max(1, args.steps // 3) == 0:
            print(f"  step {step:3d}: train loss {loss.item():.3f}, gradient norm {norm:.2e}")
    with torch.no_grad():
        loss_after = F.mse_loss(model(eval_x), eval_x[-1, :, 0]).item()
    print(f"eval loss {loss_before:.3f} -> {loss_after:.3f}")
    return {"loss_before": loss_before, "loss_after": loss_after, "grad_norms": norms,
            "grad_norm_before_clip": first["before"], "grad_norm_after_clip": first["after"],
            "clip": args.clip, "update_size_unclipped": args.lr * first["before"],
            "update_size_clipped": args.lr * first["after"], "out": args.out}


if __name__ == "__main__":
    main()
