"""Bench presets: the sizes of a bench that suit a dataset and a device.

Kept free of torch and of the rest of the package, so ``marginrobust bench --help`` can
list them without importing anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Sizes of a bench that suit a dataset and a device.

    Attributes:
        model, width, bias: The model.
        epochs, batch_size, schedule: Training (paper: loss-based, batch 100).
        train_subset, test_subset: Seeded class-balanced subsets (None: all).
        checkpoint_decades: Checkpoint spacing in decades of the summed loss.
        n: Evaluation points per split.
        attacks: Attacks run at every checkpoint.
        aa_attacks: A custom AutoAttack set, or ``standard`` for the full version.
    """

    model: str = "cnn"
    width: float = 1.0
    bias: str = "none"
    epochs: int = 100
    batch_size: int = 100
    schedule: str = "loss-based"
    train_subset: int | None = None
    test_subset: int | None = None
    checkpoint_decades: float = 2.0
    n: int = 100
    attacks: str = "autoattack,pgd,fmn"
    aa_attacks: str = "apgd-ce,apgd-t"


_CPU_SMALL = Preset(width=0.5, epochs=40, train_subset=2000, test_subset=500)
# CPU presets fit a 2-core machine in minutes; GPU presets follow the paper more closely
# (full data and width, AutoAttack standard) and take hours.
PRESETS: dict[tuple[str, str], Preset] = {
    ("digits", "cpu"): Preset(width=0.5, epochs=120),
    ("fashion-mnist", "cpu"): _CPU_SMALL,
    ("mnist", "cpu"): _CPU_SMALL,
    ("cifar10", "cpu"): _CPU_SMALL,
    ("imagefolder", "cpu"): _CPU_SMALL,
    ("digits", "cuda"): Preset(epochs=2000, n=450, aa_attacks="standard", checkpoint_decades=5),
    ("fashion-mnist", "cuda"): Preset(epochs=1000, n=1000, aa_attacks="standard",
                                      checkpoint_decades=5),
    ("mnist", "cuda"): Preset(epochs=1000, n=1000, aa_attacks="standard", checkpoint_decades=5),
    ("cifar10", "cuda"): Preset(model="vgg16", bias="first", epochs=500, n=1000,
                                aa_attacks="standard", checkpoint_decades=5),
    ("imagefolder", "cuda"): Preset(model="vgg16", bias="first", epochs=500, n=1000,
                                    aa_attacks="standard", checkpoint_decades=5),
}


def preset_for(dataset: str, device: str) -> Preset:
    """The preset of a dataset on a device kind (``cpu`` or ``cuda``); a generic one otherwise."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return PRESETS.get((dataset.split(":")[0], kind), Preset())


# What the cuda presets cost, as far as it was measured: once, on one H200, with code older
# than this version's fused loss (benchmarks/gpu.sh measures the current code; put its
# seconds here when it has run). Said in --help so nobody starts hours of work unwarned.
CUDA_COST = (
    "cuda presets take hours; not yet timed with this version on a GPU\n"
    "(benchmarks/gpu.sh times them). Measured once on an H200 with earlier code:\n"
    "cifar10 [cuda] trained at 5.8 s per accepted epoch (about 50 min for 500), and\n"
    "AutoAttack standard L2 took 45 s for 200 points: about 15 min per checkpoint\n"
    "at n=1000, 2 norms and 2 splits, so 2 h or more in all."
)


def describe_presets() -> str:
    """The preset table and what the cuda presets cost, for ``--help``."""
    lines = []
    for (name, kind), p in PRESETS.items():
        subset = f"{p.train_subset or 'all'}/{p.test_subset or 'all'}"
        lines.append(f"{name} [{kind}]: {p.model} width {p.width:g}, {p.epochs} epochs, "
                     f"subsets {subset}, n={p.n}, AutoAttack {p.aa_attacks}")
    return "\n".join([*lines, "", CUDA_COST])
