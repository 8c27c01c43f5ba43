"""Training step: marginrobust's trainer vs a plain PyTorch SGD loop.

Same model (the paper's CNN on 28x28 inputs), same data, same batch size (100). The
trainer's epoch adds the float64 log-domain loss with the frame, the explosion check kept
on the device, and the rollback snapshot; the plain loop uses F.cross_entropy.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from marginrobust import TrainConfig, Trainer, create_model

from .common import alternate


def run(n: int = 2000, batch_size: int = 100, reps: int = 5) -> dict[str, Any]:
    torch.manual_seed(0)
    x = torch.rand(n, 1, 28, 28)
    y = torch.randint(0, 10, (n,))
    ours = create_model("cnn", in_chans=1, img_size=28)
    plain = create_model("cnn", in_chans=1, img_size=28)
    plain.load_state_dict(ours.state_dict())
    trainer = Trainer(ours, x, y, x[:100], y[:100],
                      TrainConfig(batch_size=batch_size, lr=0.01, schedule="constant",
                                  device="cpu"))
    trainer.schedule.start(0.0)
    opt = torch.optim.SGD(plain.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)

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

    t = alternate(marginrobust_epoch, plain_epoch, reps=reps)
    steps = -(-n // batch_size)
    return {"benchmark": "training step (cnn 28x28, batch 100)",
            "figure": "throughput ratio marginrobust/plain", "value": 1 / t["ratio"],
            "target": ">= 0.95", "ok": 1 / t["ratio"] >= 0.95,
            "detail": f"{steps / t['a_s']:.1f} vs {steps / t['b_s']:.1f} steps/s"}
