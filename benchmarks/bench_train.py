"""Training step: marginrobust's trainer vs a plain PyTorch SGD loop.

Same model (the paper's CNN on 28x28 inputs), same data (Fashion-MNIST when installed,
else noise), same batch size (100). The trainer's epoch adds the float64 log-domain loss
with the frame, the explosion check kept on the device, and the rollback snapshot; the
plain loop uses F.cross_entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from marginrobust import TrainConfig, Trainer, create_model

from .common import Row, alternate, images28, reps_for, row


def run(quick: bool = False, n: int = 2000, batch_size: int = 100) -> Row:
    """Throughput ratio (steps/s) of ``Trainer._run_epoch`` over a plain SGD epoch."""
    x, y, source = images28(n)
    torch.manual_seed(0)
    ours = create_model("cnn", in_chans=1, img_size=28)
    plain = create_model("cnn", in_chans=1, img_size=28)
    plain.load_state_dict(ours.state_dict())
    trainer = Trainer(ours, x, y, x[:100], y[:100],
                      TrainConfig(batch_size=batch_size, lr=0.01, schedule="constant",
                                  device="cpu"))
    trainer.schedule.start(0.0)
    opt = torch.optim.SGD(plain.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    if quick:
        # Fewer steps per timed call: the ratio only needs a few dozen steps per side.
        n = n // 2
        trainer.x_train, trainer.y_train = x[:n], y[:n]

    def marginrobust_epoch() -> None:
        trainer._run_epoch()

    def plain_epoch() -> None:
        plain.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(plain(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    t = alternate(marginrobust_epoch, plain_epoch, reps=reps_for(quick, 5))
    steps = -(-n // batch_size)
    value = 1 / t["ratio"]
    return row("training step (cnn 28x28, batch 100)", "throughput ratio marginrobust/plain",
               value, ">= 0.95", value >= 0.95,
               f"{steps / t['a_s']:.1f} vs {steps / t['b_s']:.1f} steps/s, {n} {source} images")
