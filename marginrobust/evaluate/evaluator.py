"""The Evaluator: attacks and certificates on a model, a checkpoint, or a whole run.

For each (split, norm, ε) it records clean accuracy, the robust accuracy of every attack,
certified accuracy, and the per-point worst case over the attacks; minimal-norm attacks
and certificates also give per-point distances and radii. Consistency between the
figures is checked and violations are recorded as flags, never hidden:

    certified ≤ AutoAttack ≤ PGD ≤ clean accuracy, and no attack finds an adversarial
    point inside a certified radius.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import Dataset, balanced_subset, load_dataset
from ..errors import UserError
from ..margins import param_norm
from ..registry import ATTACKS
from ..results import EvalRecord, ResultsStore, records_frame
from .attacks import Attack, MinimalNormAttack
from .certify import ibp_certified, lipschitz_radii, operator_norm_bounds
from .threats import ThreatModel, default_threats, normalize_norm

DEFAULT_ATTACKS = ("autoattack", "pgd", "fmn")
SPLITS = ("test", "train")
CONTEXT_KEYS = ("log10_loss", "train_acc", "test_acc", "normalized_margin", "product_margin",
                "smoothed_margin")
# Last part of the keys of the adversarial points kept for warm starts.
ADVERSARIAL = "adversarial"
# Order of the robustness chain checked per (split, norm, ε): each ≤ the next.
CHAIN = ("certified", "autoattack", "pgd")


def _key(*parts: Any) -> str:
    return "/".join(str(p) for p in parts)


def _certified(radius: np.ndarray, eps: float, clean: np.ndarray,
               ibp: np.ndarray | None = None) -> np.ndarray:
    """Points certified at ε: correct with a Lipschitz radius above ε, or IBP-certified."""
    lip = (radius > eps) & clean
    return lip if ibp is None else lip | ibp


@dataclass
class PointSet:
    """The fixed evaluation points of one split."""

    split: str
    x: torch.Tensor
    y: torch.Tensor
    indices: list[int] = field(default_factory=list)


def select_points(data: Dataset, n: int, seed: int, splits: Sequence[str] = SPLITS,
                  saved: dict[str, list[int]] | None = None) -> dict[str, PointSet]:
    """Seeded, class-balanced evaluation points per split (``saved`` indices win).

    The same (data, n, seed) always gives the same points, so every checkpoint of a run
    is evaluated on the same inputs.
    """
    out = {}
    for i, split in enumerate(splits):
        if split not in SPLITS:
            raise UserError(f"split must be train or test, not {split!r}")
        x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
        if saved and split in saved:
            idx = list(saved[split])
        else:
            k = min(n, len(y))
            rng = np.random.default_rng([seed, 7, i])
            idx = sorted(int(v) for v in balanced_subset(y.numpy(), k, data.spec.num_classes, rng))
        out[split] = PointSet(split, x[idx], y[idx], idx)
    return out


class Evaluator:
    """Runs attacks and certificates on classifiers with inputs in [0, 1].

    Args:
        threats: Threat models (norm + ε grid); a norm in ``norms`` without one here
            uses the dataset's default grid.
        norms: The norms to evaluate (default: those of ``threats``, else L2 and Linf).
        attacks: Registered attack names (``autoattack``, ``pgd``, ``fmn``, ``ddn``,
            ``deepfool``, ``cw``, plugins) or :class:`Attack` instances.
        certify: Also compute Lipschitz-margin radii and IBP certificates.
        n: Points per split.
        seed: Seed of the point selection and of every attack.
        device: ``auto``, ``cpu`` or ``cuda``.
        attack_options: Per attack name, keyword options for its factory, e.g.
            ``{"autoattack": {"version": "custom", "attacks_to_run": ["apgd-ce"]}}``.
        warm_start: Start each checkpoint's minimal-norm attacks that support it (FMN L2)
            from the previous checkpoint's adversarial points (stored under
            ``eval/adversarials/``). Off by default, because with it a checkpoint's
            results depend on the checkpoints before it. ``python -m benchmarks --only
            warm`` measures what it saves.
    """

    def __init__(self, threats: Sequence[ThreatModel] | None = None,
                 norms: Sequence[str] | None = None,
                 attacks: Sequence[str | Attack] = DEFAULT_ATTACKS, certify: bool = True,
                 n: int = 500, seed: int = 0, device: str = "auto",
                 attack_options: dict[str, dict[str, Any]] | None = None,
                 warm_start: bool = False) -> None:
        from ..train.trainer import resolve_device

        if n < 1:
            raise UserError(f"the number of points must be positive, not {n}")
        self.threats = list(threats or [])
        if norms is None:
            norms = [t.norm for t in self.threats] or ["L2", "Linf"]
        self.norms = [normalize_norm(v) for v in norms]
        for t in self.threats:
            if t.norm not in self.norms:
                self.norms.append(t.norm)
        options = attack_options or {}
        unknown = sorted(set(options) - set(ATTACKS.names()))
        if unknown:
            raise UserError(f"options given for unknown attacks: {', '.join(unknown)}")
        self.attacks: list[Attack] = [
            a if isinstance(a, Attack) else ATTACKS.get(a)(**options.get(a, {}))
            for a in attacks]
        self.certify = certify
        self.n = n
        self.seed = seed
        self.warm_start = warm_start
        self.device = resolve_device(device)
        self._bounds_key: tuple[Any, ...] | None = None
        self._bounds_cache: list[Any] = []

    def threats_for(self, dataset: str | None) -> list[ThreatModel]:
        """The threat models used on ``dataset``: given ones, else its default grids."""
        given = {t.norm: t for t in self.threats}
        if all(norm in given for norm in self.norms):
            return [given[norm] for norm in self.norms]
        if dataset is None:
            raise UserError("give the epsilons of every norm (no dataset to take defaults from)")
        defaults = {t.norm: t for t in default_threats(dataset.split(":")[0])}
        return [given.get(norm) or defaults[norm] for norm in self.norms]

    # ------------------------------------------------------------------ one model, one split
    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, split: str = "test",
                 checkpoint: str = "model", context: dict[str, Any] | None = None,
                 done: set[tuple[str, str, str, str, float]] | None = None,
                 arrays: dict[str, np.ndarray] | None = None, threats: Sequence[ThreatModel]
                 | None = None, on_step: Callable[[str], None] | None = None,
                 starts: dict[str, np.ndarray] | None = None,
                 ) -> tuple[list[EvalRecord], dict[str, np.ndarray]]:
        """Evaluate one model on fixed points.

        Args:
            model: Classifier returning logits.
            x, y: The evaluation points (inputs in [0, 1]) and labels.
            split: Label of the points (``test`` or ``train``).
            checkpoint: Label of the model in the records.
            context: Extra record fields (epoch, step, margins...).
            done: Keys already evaluated (skipped; their per-point arrays come from ``arrays``).
            arrays: Per-point arrays from an earlier, interrupted evaluation.
            threats: Override the evaluator's threat models.
            on_step: Called with a short label after each finished unit of work.
            starts: With ``warm_start``, the previous checkpoint's adversarial points
                (the ``.../adversarial`` arrays this method returned for it).

        Returns:
            (records, per-point arrays keyed ``split/method/norm[/eps]/...``; with
            ``warm_start`` they include the adversarial points as
            ``split/attack/norm/adversarial``).
        """
        threats = list(threats or self.threats_for(None))
        done = done or set()
        arrays = dict(arrays or {})
        model = model.to(self.device).eval()
        x, y = x.to(self.device), y.to(self.device)
        ctx = {k: v for k, v in (context or {}).items() if k in EvalRecord.__dataclass_fields__}
        records: list[EvalRecord] = []

        def record(method: str, norm: str, eps: float, robust: np.ndarray, clean: np.ndarray,
                   seconds: float, distances: np.ndarray | None = None) -> None:
            median = float(np.median(distances)) if distances is not None else None
            least = float(np.min(distances)) if distances is not None else None
            records.append(EvalRecord(checkpoint=checkpoint, split=split, method=method,
                                      norm=norm, eps=float(eps), n=len(robust),
                                      clean_acc=float(clean.mean()),
                                      robust_acc=float(robust.mean()), median_distance=median,
                                      min_distance=least, seconds=seconds, **ctx))

        def is_done(method: str, norm: str, eps: float) -> bool:
            return (checkpoint, split, method, norm, float(eps)) in done

        clean = arrays.get(_key(split, "clean_correct"))
        if clean is None:
            with torch.no_grad():
                logits = torch.cat([model(x[i:i + 512]) for i in range(0, len(x), 512)])
            clean = (logits.argmax(1) == y).cpu().numpy()
            arrays[_key(split, "clean_correct")] = clean

        radii = self._certify(model, x, y, split, arrays) if self.certify else {}
        for threat in threats:
            norm = threat.norm
            for eps in threat.epsilons:
                if self.certify:
                    self._certificates(model, x, y, split, norm, eps, clean, radii, arrays,
                                       record, is_done)
            for attack in self.attacks:
                if norm not in attack.norms:
                    continue
                todo = [e for e in threat.epsilons if not is_done(attack.name, norm, e)]
                if not todo:
                    continue
                self._attack(attack, model, x, y, split, ThreatModel(norm, tuple(todo)),
                             arrays, record, starts or {})
                if on_step:
                    on_step(f"{split} {attack.name} {norm}")
            for eps in threat.epsilons:
                self._worst_and_flags(split, norm, eps, clean, arrays, radii, records,
                                      record, is_done)
        return records, arrays

    def _bounds(self, model: nn.Module, shape: tuple[int, ...]) -> list[Any]:
        """Operator-norm bounds, computed once per model state and shared by the splits."""
        # ρ in the key: the same module object trained further must get new bounds.
        key = (id(model), shape, param_norm(model))
        if self._bounds_key != key:
            self._bounds_cache = operator_norm_bounds(model, shape)
            self._bounds_key = key
        return self._bounds_cache

    def _certify(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, split: str,
                 arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = {n: _key(split, "certify-lipschitz", n, "radius") for n in ("L2", "Linf")}
        if not all(k in arrays for k in keys.values()):
            start = time.perf_counter()
            res = lipschitz_radii(model, x, y, bounds=self._bounds(model, tuple(x.shape[1:])))
            arrays[keys["L2"]], arrays[keys["Linf"]] = res.l2, res.linf
            arrays[_key(split, "certify-lipschitz", "seconds")] = np.array(
                time.perf_counter() - start)
        return {n: arrays[k] for n, k in keys.items()}

    def _certificates(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, split: str,
                      norm: str, eps: float, clean: np.ndarray, radii: dict[str, np.ndarray],
                      arrays: dict[str, np.ndarray], record: Callable[..., None],
                      is_done: Callable[[str, str, float], bool]) -> None:
        ibp_key = _key(split, "certify-ibp", norm, eps, "certified")
        if ibp_key not in arrays:
            start = time.perf_counter()
            arrays[ibp_key] = self._ibp(model, x, y, split, norm, eps, clean, arrays)
            arrays[_key(split, "certify-ibp", norm, eps, "seconds")] = np.array(
                time.perf_counter() - start)
        lip = _certified(radii[norm], eps, clean)
        seconds = float(arrays.get(_key(split, "certify-lipschitz", "seconds"), 0.0))
        if not is_done("certify-lipschitz", norm, eps):
            record("certify-lipschitz", norm, eps, lip, clean, seconds, radii[norm])
        if not is_done("certify-ibp", norm, eps):
            record("certify-ibp", norm, eps, arrays[ibp_key], clean,
                   float(arrays[_key(split, "certify-ibp", norm, eps, "seconds")]))
        if not is_done("certified", norm, eps):
            record("certified", norm, eps, _certified(radii[norm], eps, clean, arrays[ibp_key]),
                   clean, 0.0)

    @staticmethod
    def _ibp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, split: str, norm: str,
             eps: float, clean: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """IBP certificates at ε, reusing what smaller or equal budgets already decided.

        Both norms propagate the same Linf box, and interval arithmetic is monotone in the
        box: a point IBP could not certify at ε' ≤ ε (under either norm) cannot be certified
        at ε, so only the points still certified at every smaller budget are propagated.
        """
        candidates = clean.copy()
        prefix = f"{split}/certify-ibp/"
        for key, value in arrays.items():
            parts = key.split("/")
            if key.startswith(prefix) and parts[-1] == "certified" and float(parts[3]) <= eps:
                if float(parts[3]) == eps:
                    return value & clean
                candidates &= value
        certified = np.zeros_like(clean)
        idx = np.flatnonzero(candidates)
        if len(idx):
            certified[idx] = ibp_certified(model, x[idx], y[idx], eps, norm)
        return certified & clean

    def _attack(self, attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                split: str, threat: ThreatModel, arrays: dict[str, np.ndarray],
                record: Callable[..., None], starts: dict[str, np.ndarray]) -> None:
        norm = threat.norm
        dist_key = _key(split, attack.name, norm, "distances")
        if isinstance(attack, MinimalNormAttack) and dist_key in arrays:
            # One minimal-norm run answers every ε: reuse it rather than attack again.
            distances = arrays[dist_key]
            clean = arrays[_key(split, "clean_correct")]
            seconds = float(arrays[_key(split, attack.name, norm, "seconds")])
            for eps in threat.epsilons:
                record(attack.name, norm, eps, distances > eps, clean, seconds, distances)
            return
        adv_key = _key(split, attack.name, norm, ADVERSARIAL)
        warm = self.warm_start and norm in attack.warm_start_norms
        result = attack(model, x, y, threat, seed=self.seed,
                        starting_points=starts.get(adv_key) if warm else None)
        if result.distances is not None:
            arrays[dist_key] = result.distances
            arrays[_key(split, attack.name, norm, "seconds")] = np.array(result.seconds)
            if warm and result.adversarials is not None:
                arrays[adv_key] = result.adversarials
        for i, eps in enumerate(threat.epsilons):
            arrays[_key(split, attack.name, norm, eps, "robust")] = result.robust[i]
            record(attack.name, norm, eps, result.robust[i], result.clean_correct,
                   result.seconds / len(threat.epsilons), result.distances)

    def _robust_of(self, attack: Attack, split: str, norm: str, eps: float,
                   arrays: dict[str, np.ndarray]) -> np.ndarray | None:
        dist = arrays.get(_key(split, attack.name, norm, "distances"))
        if dist is not None:
            return dist > eps
        return arrays.get(_key(split, attack.name, norm, eps, "robust"))

    def _worst_and_flags(self, split: str, norm: str, eps: float, clean: np.ndarray,
                         arrays: dict[str, np.ndarray], radii: dict[str, np.ndarray],
                         records: list[EvalRecord], record: Callable[..., None],
                         is_done: Callable[[str, str, float], bool]) -> None:
        per_attack = {a.name: r for a in self.attacks
                      if (r := self._robust_of(a, split, norm, eps, arrays)) is not None}
        if per_attack and not is_done("worst", norm, eps):
            worst = np.logical_and.reduce([clean, *per_attack.values()])
            record("worst", norm, eps, worst, clean, 0.0)
        flags = []
        acc = {name: float(r.mean()) for name, r in per_attack.items()}
        ibp = arrays.get(_key(split, "certify-ibp", norm, eps, "certified"))
        cert = _certified(radii[norm], eps, clean, ibp) if self.certify and ibp is not None \
            else None
        if cert is not None:
            acc["certified"] = float(cert.mean())
        chain = [(name, acc[name]) for name in CHAIN if name in acc] + [("clean", clean.mean())]
        for (lo, a), (hi, b) in zip(chain, chain[1:]):
            if a > b + 1e-12:
                flags.append(f"{lo} accuracy {a:.4f} > {hi} accuracy {b:.4f}")
        if cert is not None:
            for name, robust in per_attack.items():
                broken = int((cert & ~robust).sum())
                if broken:
                    flags.append(f"{name} broke {broken} points certified at eps={eps:g}")
            for a in self.attacks:
                dist = arrays.get(_key(split, a.name, norm, "distances"))
                if dist is not None:
                    inside = int((dist < radii[norm] * (1 - 1e-6)).sum())
                    if inside:
                        flags.append(f"{a.name} found {inside} adversarial points inside "
                                     "their certified radius")
        if flags:
            for r in records:
                if r.split == split and r.norm == norm and r.eps == float(eps):
                    r.flags = sorted(set(r.flags) | set(flags))
            warnings.warn(f"consistency violation ({split}, {norm}, eps={eps:g}): "
                          + "; ".join(flags), stacklevel=3)

    # ------------------------------------------------------------------ a model on a dataset
    def evaluate_data(self, model: nn.Module, data: Dataset | str,
                      splits: Sequence[str] = ("test",)) -> Any:
        """Evaluate ``model`` on fixed points of a dataset (a :class:`Dataset` or a name).

        Returns:
            A pandas DataFrame, one row per (split, method, norm, ε).
        """
        if isinstance(data, str):
            data = load_dataset(data)
        threats = self.threats_for(data.spec.name)
        records: list[EvalRecord] = []
        for split, pts in select_points(data, self.n, self.seed, splits).items():
            recs, _ = self.evaluate(model, pts.x, pts.y, split, threats=threats)
            records.extend(recs)
        return records_frame(records)

    # ------------------------------------------------------------------ a run on disk
    def evaluate_run(self, path: str | Path, splits: Sequence[str] = SPLITS,
                     progress: bool = False, checkpoints: Iterable[Path] | None = None,
                     ) -> ResultsStore:
        """Evaluate every checkpoint of a run directory (or one checkpoint file).

        Results go to ``RUN_DIR/eval/``; a rerun skips every finished (checkpoint, split,
        method, norm, ε) and reuses the stored per-point arrays.
        """
        from ..train.checkpoints import list_checkpoints, load_checkpoint, read_checkpoint

        path = Path(path)
        if path.is_file():
            files = [path]
            run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        elif path.is_dir():
            files = list(checkpoints) if checkpoints is not None else list_checkpoints(path)
            run_dir = path
            if not files:
                raise UserError(f"{path} holds no checkpoints (expected checkpoints/epoch-*.pt)")
        else:
            raise UserError(f"no run directory or checkpoint at {path}")
        first = read_checkpoint(files[0])
        run = first.get("run", {})
        spec = first["data"]
        data = load_dataset(spec["name"], run.get("data_dir"), spec.get("train_subset"),
                            spec.get("test_subset"), spec.get("seed", 0))
        threats = self.threats_for(spec["name"])
        store = ResultsStore(run_dir)
        points = select_points(data, self.n, self.seed, splits, store.load_points())
        store.save_points({**(store.load_points() or {}),
                           **{s: p.indices for s, p in points.items()}})
        bar = None
        if progress:
            from tqdm.auto import tqdm

            per_ckpt = len(points) * sum(
                sum(t.norm in a.norms for a in self.attacks) for t in threats)
            bar = tqdm(total=len(files) * per_ckpt, unit="attack", dynamic_ncols=True)
        step = (lambda _label: bar.update(1)) if bar is not None else None
        previous: str | None = None
        for file in files:
            name = file.stem
            model, meta = load_checkpoint(file, self.device)
            context = {"epoch": meta["epoch"], "step": meta["step"],
                       "train_wall_s": meta["wall_s"], "run": run_dir.name,
                       **{k: (meta.get("metrics") or {}).get(k) for k in CONTEXT_KEYS}}
            # Read once per checkpoint: the file holds the starts of every split.
            starts = (store.load_adversarials(previous)
                      if self.warm_start and previous is not None else None)
            for split, pts in points.items():
                if bar is not None:
                    bar.set_description(f"{name} {split}")
                done = store.done()
                records, arrays = self.evaluate(model, pts.x, pts.y, split, name, context,
                                                done, store.load_arrays(name), threats, step,
                                                starts)
                adversarial = {k: arrays.pop(k) for k in list(arrays)
                               if k.endswith("/" + ADVERSARIAL)}
                # The points first: whenever a checkpoint's results exist, so do the
                # starts the next checkpoint needs, and a resumed run gets the same numbers.
                if adversarial:
                    store.save_adversarials(name, adversarial)
                store.save_arrays(name, arrays)
                store.add(records)
            previous = name
        if bar is not None:
            bar.close()
        return store
