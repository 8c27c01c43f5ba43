"""The precision and determinism policy: which float32 kernels torch may use, set in one place.

On a GPU, torch may run float32 matmuls and cuDNN convolutions in TF32 (10-bit mantissa).
That is fine for training steps if one accepts it, but not for the instrument: a q_min of
73.197 read as 73.208 moves log10 𝓛 in the third decimal, and at log10 𝓛 ≈ −800 the loss
is then wrong in its leading digits. So:

* :func:`measurement_precision` — margins, losses and every per-epoch measurement run with
  TF32 off (IEEE float32), whatever the training precision;
* :func:`training_precision` — the training steps, ``fp32`` (exact, the default) or
  ``tf32`` (faster convolutions on Ampere and later GPUs);
* :func:`deterministic_algorithms` — deterministic kernels, no cuDNN autotuning and the
  cuBLAS workspace setting, so that a rerun or a resumed run equals an uninterrupted one
  bit for bit on cuda too.

Each is a context manager that restores every flag it touched on exit, exception or not:
a library must not leave global torch state changed for its caller. They nest; the inner
one wins inside and the outer one's state comes back after.

All the flag writes go through one function (``_apply``) and all the reads through
:func:`current_flags`. The CPU's own (oneDNN) float32 kernels are kept at IEEE precision
in every mode, so on the CPU the policy changes no number, which is what the tests check.

cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` when it creates its handle, i.e. at the first
cuBLAS call of the process. :func:`deterministic_algorithms` sets it if absent, which is
enough when no cuBLAS call came before; a run should call :func:`set_cublas_workspace_config`
once at start, before any CUDA work, so that the setting is in place whatever ran first.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from .errors import UserError

PRECISIONS = ("fp32", "tf32")
DEFAULT_PRECISION = "fp32"
CUBLAS_WORKSPACE_ENV = "CUBLAS_WORKSPACE_CONFIG"
# The setting torch's reproducibility notes give for deterministic cuBLAS (8 buffers of 4 MiB).
CUBLAS_WORKSPACE_VALUE = ":4096:8"

# torch >= 2.9 keeps the float32 precision twice: as per-backend, per-op strings (``ieee``,
# ``tf32``, ``bf16``, ``none`` = inherit) and as the legacy state behind ``allow_tf32`` and
# ``set_float32_matmul_precision``. Torch checks that the two agree (on cuda, a matmul
# raises "mix of the legacy and new APIs" otherwise), and the legacy setters write both.
# So the policy writes through the legacy setters, which keeps them in agreement, then
# sets the per-op leaves below (the CPU's oneDNN ones too); it restores the legacy state,
# then the leaves. A caller whose state already mixes the two (the legacy getters raise)
# gets its leaves back and its legacy state left alone.
_LEAVES = ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv",
           "mkldnn.rnn")
# Leaves on a GPU; the CPU (oneDNN) ones are kept at IEEE in both training precisions,
# since the policy's tf32 is about the GPU only.
_GPU_LEAVES = ("cuda.matmul", "cudnn.conv", "cudnn.rnn")


class LateCublasConfigWarning(UserWarning):
    """CUBLAS_WORKSPACE_CONFIG was set after CUDA had started: it may come too late."""


@dataclass(frozen=True)
class TorchFlags:
    """The global torch state this policy reads and writes.

    Attributes:
        legacy: ``(torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)``;
            None when torch refuses to read them (a caller mixed the legacy and newer APIs).
        fp32_precision: (leaf, value) of each per-op precision string of torch >= 2.9,
            e.g. ``("cudnn.conv", "tf32")`` (as torch reads them: ``none`` resolved to the
            parent's value); empty on an older torch.
        deterministic: ``torch.are_deterministic_algorithms_enabled()``.
        deterministic_warn_only: ``torch.is_deterministic_algorithms_warn_only_enabled()``.
        cudnn_benchmark: ``torch.backends.cudnn.benchmark`` (autotuning).
        cudnn_deterministic: ``torch.backends.cudnn.deterministic``.
        cublas_workspace: ``os.environ["CUBLAS_WORKSPACE_CONFIG"]`` (None: unset).
    """

    legacy: tuple[str, bool] | None
    fp32_precision: tuple[tuple[str, str], ...]
    deterministic: bool
    deterministic_warn_only: bool
    cudnn_benchmark: bool
    cudnn_deterministic: bool
    cublas_workspace: str | None

    @property
    def matmul_tf32(self) -> bool:
        """Whether float32 matmuls on cuda may use TF32."""
        if self.fp32_precision:
            return dict(self.fp32_precision)["cuda.matmul"] == "tf32"
        return self.legacy is not None and self.legacy[0] != "highest"

    @property
    def conv_tf32(self) -> bool:
        """Whether float32 cuDNN convolutions may use TF32."""
        if self.fp32_precision:
            return dict(self.fp32_precision)["cudnn.conv"] == "tf32"
        return self.legacy is not None and self.legacy[1]

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for run.json, checkpoints, benchmark results)."""
        d = asdict(self)
        d["fp32_precision"] = dict(self.fp32_precision)
        d["legacy"] = None if self.legacy is None else list(self.legacy)
        d["matmul_tf32"], d["conv_tf32"] = self.matmul_tf32, self.conv_tf32
        return d


def _backend(path: str) -> Any:
    obj: Any = torch.backends
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


_STRINGS = all(isinstance(getattr(_backend(p), "fp32_precision", None), str) for p in _LEAVES)


def _read_legacy() -> tuple[str, bool] | None:
    try:
        return torch.get_float32_matmul_precision(), bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:  # torch >= 2.9 after a caller mixed the two APIs
        return None


def _read_leaves() -> tuple[tuple[str, str], ...]:
    if not _STRINGS:
        return ()
    return tuple((p, str(_backend(p).fp32_precision)) for p in _LEAVES)


def current_flags() -> TorchFlags:
    """The flags as torch has them now."""
    return TorchFlags(
        legacy=_read_legacy(),
        fp32_precision=_read_leaves(),
        deterministic=torch.are_deterministic_algorithms_enabled(),
        deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
        cublas_workspace=os.environ.get(CUBLAS_WORKSPACE_ENV),
    )


def _precision_state(saved: TorchFlags, tf32: bool) -> dict[str, Any]:
    """The precision fields of IEEE float32 everywhere, or of TF32 on the GPU only."""
    legacy = ("high" if tf32 else "highest", tf32) if saved.legacy is not None or not _STRINGS \
        else None
    leaves = tuple((p, "tf32" if tf32 and p in _GPU_LEAVES else "ieee")
                   for p, _ in saved.fp32_precision)
    return {"legacy": legacy, "fp32_precision": leaves}


_ALL_FIELDS = ("legacy", "fp32_precision", "deterministic", "cudnn_benchmark",
               "cudnn_deterministic", "cublas_workspace")


def _apply(flags: TorchFlags, fields: tuple[str, ...] = _ALL_FIELDS) -> None:
    """Write ``fields`` of ``flags`` into torch: the one place this package changes them."""
    if "legacy" in fields and flags.legacy is not None:
        # The legacy setters write the strings as well, so they go first and the leaves
        # then get their own values.
        torch.set_float32_matmul_precision(flags.legacy[0])
        torch.backends.cudnn.allow_tf32 = flags.legacy[1]
    if "fp32_precision" in fields:
        for path, value in flags.fp32_precision:
            _backend(path).fp32_precision = value
    if "deterministic" in fields:
        torch.use_deterministic_algorithms(flags.deterministic,
                                           warn_only=flags.deterministic_warn_only)
    if "cudnn_benchmark" in fields:
        torch.backends.cudnn.benchmark = flags.cudnn_benchmark
    if "cudnn_deterministic" in fields:
        torch.backends.cudnn.deterministic = flags.cudnn_deterministic
    if "cublas_workspace" in fields:
        if flags.cublas_workspace is None:
            os.environ.pop(CUBLAS_WORKSPACE_ENV, None)
        else:
            os.environ[CUBLAS_WORKSPACE_ENV] = flags.cublas_workspace


@contextmanager
def _flags(**changes: Any) -> Iterator[TorchFlags]:
    """Set some :class:`TorchFlags` fields for the ``with`` block, restore all of them after.

    Only the fields named are written on the way in; on the way out every field is
    written back as it was read.
    """
    saved = current_flags()
    if "precision" in changes:
        changes.update(_precision_state(saved, changes.pop("precision")))
    fields = tuple(f for f in _ALL_FIELDS if f in changes
                   or (f == "deterministic" and "deterministic_warn_only" in changes))
    try:
        _apply(replace(saved, **changes), fields)
        yield current_flags()
    finally:
        _apply(saved)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else one sentence for the user.

    Raises:
        UserError: ``--precision must be fp32 or tf32, not 'x'``.
    """
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be {' or '.join(PRECISIONS)}, not {precision!r}")
    return precision


@contextmanager
def measurement_precision() -> Iterator[TorchFlags]:
    """TF32 off for matmuls and cuDNN convolutions (IEEE float32) inside the block.

    For margins, losses and every per-epoch measurement, whatever the training precision.
    Yields the flags in force inside; restores the caller's flags after.
    """
    with _flags(precision=False) as f:
        yield f


@contextmanager
def training_precision(precision: str = DEFAULT_PRECISION) -> Iterator[TorchFlags]:
    """The float32 precision of the training steps inside the block.

    Args:
        precision: ``fp32`` (IEEE float32: exact, the default) or ``tf32`` (TF32 matmuls
            and cuDNN convolutions on GPUs that have it; no effect on the CPU).

    Raises:
        UserError: an unknown precision.
    """
    tf32 = check_precision(precision) == "tf32"
    with _flags(precision=tf32) as f:
        yield f


def set_cublas_workspace_config() -> bool:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` for deterministic cuBLAS if it is unset.

    Call once at the start of a run, before any CUDA work: cuBLAS reads it when it
    creates its handle. Kept for the process (it changes nothing but cuBLAS's workspace).

    Returns:
        Whether it was set now (False: it was already there, left as it is).
    """
    if os.environ.get(CUBLAS_WORKSPACE_ENV):
        return False
    os.environ[CUBLAS_WORKSPACE_ENV] = CUBLAS_WORKSPACE_VALUE
    return True


@contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[TorchFlags]:
    """Deterministic kernels inside the block (or, with ``enabled=False``, torch's defaults).

    Enabled: ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic
    kernel raises rather than warns), no cuDNN autotuning, deterministic cuDNN, and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` if the environment has no value (a value already
    there is kept). Disabled: non-deterministic kernels allowed, no autotuning either, so
    the two differ by the kernels alone. Restores all of it, the environment included,
    after.

    Warns (:class:`LateCublasConfigWarning`) when it has to set ``CUBLAS_WORKSPACE_CONFIG``
    after CUDA started: the run should call :func:`set_cublas_workspace_config` at start.
    """
    if not enabled:
        with _flags(deterministic=False, deterministic_warn_only=False,
                    cudnn_benchmark=False, cudnn_deterministic=False) as f:
            yield f
        return
    workspace = os.environ.get(CUBLAS_WORKSPACE_ENV) or CUBLAS_WORKSPACE_VALUE
    if not os.environ.get(CUBLAS_WORKSPACE_ENV) and torch.cuda.is_initialized():
        warnings.warn(f"{CUBLAS_WORKSPACE_ENV} is set after CUDA started; cuBLAS may "
                      "already have its workspace (call set_cublas_workspace_config() "
                      "at start)", LateCublasConfigWarning, stacklevel=3)
    with _flags(deterministic=True, deterministic_warn_only=False, cudnn_benchmark=False,
                cudnn_deterministic=True, cublas_workspace=workspace) as f:
        yield f


def policy_record(precision: str, deterministic: bool) -> dict[str, Any]:
    """What a run records of this policy (``run.json``, checkpoints, leaderboard).

    Args:
        precision: The training precision (``fp32`` or ``tf32``).
        deterministic: Whether deterministic algorithms were on.
    """
    return {"precision": check_precision(precision), "deterministic": bool(deterministic),
            "measurement_precision": "fp32"}


__all__ = ["CUBLAS_WORKSPACE_VALUE", "DEFAULT_PRECISION", "PRECISIONS",
           "LateCublasConfigWarning", "TorchFlags", "check_precision", "current_flags",
           "deterministic_algorithms", "measurement_precision", "policy_record",
           "set_cublas_workspace_config", "training_precision"]
