"""Several processes of one job (``torchrun``, ``srun torchrun``): who this process is,
its process group, and the few collective operations the package needs.

Without a launcher every function answers for one process (rank 0 of 1, no-op barrier,
reductions returning their input), so callers need no branch of their own. Under a
launcher (the ``env://`` variables ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` are set) :func:`init` joins the process group: ``nccl`` when the
process computes on a GPU, ``gloo`` on the CPU.

The reductions (:func:`all_logsumexp`, :func:`all_min`, :func:`all_max`, :func:`all_sum`)
gather every rank's values and reduce them in rank order in float64 (int64 for integers)
on the CPU, so every rank gets the same bits, independent of the backend's reduction
order. Data-parallel training uses :func:`all_sum_tensors_` (the gradients: one float64
all-reduce on the tensors' device, rounded once), :func:`broadcast_tensors_` (rank 0's
parameters) and :func:`share_bounds` (each rank's contiguous share of a batch or a set).

It sits at the bottom of the package with :mod:`.io`: it imports only ``errors``, and
torch only inside the functions that need it.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    import torch

# The variables an env:// launcher sets for every process.
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Long: a rank that finished its share waits at a barrier for the slowest one, and one
# unit of evaluation (AutoAttack on a large model) can take hours on a CPU. A rank that
# dies does not leave the others waiting that long: the launcher stops them.
DEFAULT_TIMEOUT = timedelta(hours=24)

# Whether this module created the process group (then it also destroys it).
_STATE = {"owner": False}


def launched() -> bool:
    """Whether a launcher started this process as one rank of a job (``torchrun``
    sets every variable of :data:`LAUNCH_ENV`, also with one process)."""
    return all(k in os.environ for k in LAUNCH_ENV)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or not launched():
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"the launcher set {name}={value!r}, which is not an integer") from None


def is_initialized() -> bool:
    """Whether this process has joined a process group."""
    if "torch.distributed" not in sys.modules:
        # Nothing imported it, so nothing joined a group: answer without importing torch.
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the job (0 without a launcher)."""
    if is_initialized():
        import torch.distributed as dist

        return dist.get_rank()
    return _env_int("RANK", 0)


def world_size() -> int:
    """The number of processes of the job (1 without a launcher)."""
    if is_initialized():
        import torch.distributed as dist

        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def local_rank() -> int:
    """This process's rank on its machine (0 without a launcher): its GPU's index."""
    return _env_int("LOCAL_RANK", 0)


def is_main_process() -> bool:
    """Whether this process is rank 0, the one that prints and writes shared files."""
    return rank() == 0


def rank_device(device: str | torch.device) -> torch.device:
    """The device of this rank: a CUDA device without an index becomes
    ``cuda:LOCAL_RANK`` under a launcher; any other device (``cpu``, ``cuda:N``) is kept.

    Raises:
        UserError: This rank's GPU does not exist (more processes than visible GPUs).
    """
    import torch

    dev = torch.device(device)
    if dev.type != "cuda" or dev.index is not None or not launched():
        return dev
    index, count = local_rank(), torch.cuda.device_count()
    if index >= count:
        raise UserError(f"rank {rank()} needs GPU {index} (LOCAL_RANK) but only {count} "
                        "are visible; start at most one process per GPU")
    return torch.device("cuda", index)


def backend_for(device: str | torch.device) -> str:
    """``nccl`` for a CUDA device (when torch has it), ``gloo`` otherwise."""
    import torch
    import torch.distributed as dist

    if torch.device(device).type == "cuda" and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def backend() -> str | None:
    """The backend of the joined process group (None when there is none)."""
    if not is_initialized():
        return None
    import torch.distributed as dist

    return str(dist.get_backend())


def init(device: str | torch.device = "cpu", timeout: timedelta = DEFAULT_TIMEOUT) -> bool:
    """Join the launcher's process group, once per process; returns whether this process
    is part of a job (False without a launcher and without a group: nothing is done).

    A group that already exists (joined earlier, e.g. by training in the same process, or
    by the caller's own ``init_process_group``) is kept as it is, whatever ``device``
    says now.

    Args:
        device: Where this process computes (:func:`rank_device`'s answer); decides the
            backend (:func:`backend_for`) and, with nccl, the current CUDA device.
        timeout: How long a collective operation waits for the other ranks.

    Raises:
        UserError: torch has no distributed support, or the device does not exist.
    """
    if is_initialized():
        return True
    if not launched():
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise UserError("this torch build has no torch.distributed; run one process")
    dev = rank_device(device)
    name = backend_for(dev)
    kwargs: dict[str, Any] = {}
    if name == "nccl":
        # nccl needs each rank's GPU current before its first collective operation.
        torch.cuda.set_device(dev)
        kwargs["device_id"] = dev
    dist.init_process_group(name, timeout=timeout, **kwargs)
    _STATE["owner"] = True
    atexit.register(shutdown)
    return True


def shutdown() -> None:
    """Leave the process group if :func:`init` joined it (safe to call twice)."""
    if _STATE["owner"] and is_initialized():
        import torch.distributed as dist

        dist.destroy_process_group()
    _STATE["owner"] = False


def _collective_device() -> torch.device:
    """Where tensors of collective operations live: the current GPU with nccl."""
    import torch

    if backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for in one process)."""
    if not is_initialized():
        return
    import torch.distributed as dist

    if backend() == "nccl":
        dist.barrier(device_ids=[_collective_device().index])
    else:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; ``obj`` itself in one
    process). The other ranks' ``obj`` is ignored."""
    if not is_initialized():
        return obj
    import torch.distributed as dist

    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if not is_initialized():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def _gathered(values: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Every rank's ``values`` stacked in rank order on the CPU: shape (ranks, *shape),
    float64, or int64 for integer input. Every rank must give the same shape."""
    import torch
    import torch.distributed as dist

    t = torch.as_tensor(values)
    if t.is_floating_point() and not isinstance(values, torch.Tensor):
        # Python floats straight to float64: as_tensor alone would round them to float32.
        t = torch.as_tensor(values, dtype=torch.float64)
    t = t.to(torch.float64 if t.is_floating_point() else torch.int64)
    if not is_initialized():
        return t.unsqueeze(0)
    t = t.to(_collective_device()).contiguous()
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t)
    return torch.stack([p.cpu() for p in parts])


def all_logsumexp(values: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """log Σ_ranks exp(values), elementwise, in float64: the log of a sum over ranks of
    quantities each rank holds as a log (e.g. log-losses of each rank's share)."""
    import torch

    return torch.logsumexp(_gathered(values).to(torch.float64), dim=0)


def all_min(values: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """The minimum over ranks, elementwise (float64, int64 for integers)."""
    return _gathered(values).min(dim=0).values


def all_max(values: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """The maximum over ranks, elementwise (float64, int64 for integers)."""
    return _gathered(values).max(dim=0).values


def all_sum(values: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """The sum over ranks, elementwise and in rank order (float64, int64 for integers:
    counts stay exact)."""
    gathered = _gathered(values)
    total = gathered[0].clone()
    # In rank order on purpose: a fixed order gives every rank, and every rerun with the
    # same world size, the same float64 sum.
    for part in gathered[1:]:
        total += part
    return total


def share_bounds(n: int, ranks: int | None = None, this: int | None = None) -> tuple[int, int]:
    """``(lo, hi)``: this rank's contiguous share ``range(lo, hi)`` of ``n`` items.

    The shares are those of ``torch.tensor_split(range(n), ranks)``: in rank order,
    rank 0 first, the first ``n % ranks`` ranks one item more; a share may be empty.

    Args:
        n: How many items are shared out.
        ranks: Into how many shares (default: :func:`world_size`).
        this: Whose share (default: :func:`rank`).
    """
    ranks = world_size() if ranks is None else ranks
    this = rank() if this is None else this
    size, extra = divmod(n, ranks)
    lo = this * size + min(this, extra)
    return lo, lo + size + (1 if this < extra else 0)


def _flat_groups(tensors: Sequence[torch.Tensor]) -> dict[tuple[Any, Any], list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype): each group travels as one buffer."""
    groups: dict[tuple[Any, Any], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    return groups


def _unflatten_into(flat: torch.Tensor, members: Sequence[torch.Tensor]) -> None:
    """Copy consecutive pieces of ``flat`` back into ``members`` (casting to their dtype)."""
    start = 0
    for t in members:
        t.copy_(flat[start:start + t.numel()].view_as(t))
        start += t.numel()


def all_sum_tensors_(tensors: Sequence[torch.Tensor]) -> None:
    """Replace every tensor, in place, by its sum over ranks (nothing to do in one process).

    One all-reduce per (device, dtype) of the tensors flattened into one buffer, summed in
    float64 and rounded once to each tensor's dtype: for float32 the correctly rounded sum
    of the ranks' values whatever order the backend adds them in (but for double
    rounding; with 2 ranks exactly the float32 sum), and the same bits on every rank (an
    all-reduce hands every rank the one reduced copy). The traffic is that of a float64
    all-reduce, whatever the number of ranks. Every rank must pass tensors of the same
    shapes and dtypes in the same order.
    """
    if not is_initialized() or world_size() == 1:
        return
    import torch
    import torch.distributed as dist

    for indices in _flat_groups(tensors).values():
        members = [tensors[i] for i in indices]
        flat = torch.cat([t.reshape(-1) for t in members]).to(_collective_device(),
                                                              torch.float64)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        _unflatten_into(flat, members)


def broadcast_tensors_(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Overwrite every tensor, in place, with rank ``src``'s (nothing to do in one process).

    Every rank must pass tensors of the same shapes and dtypes in the same order.
    """
    if not is_initialized() or world_size() == 1:
        return
    import torch
    import torch.distributed as dist

    for indices in _flat_groups(tensors).values():
        members = [tensors[i] for i in indices]
        flat = torch.cat([t.reshape(-1) for t in members]).to(_collective_device())
        dist.broadcast(flat, src=src)
        _unflatten_into(flat, members)


__all__ = ["DEFAULT_TIMEOUT", "LAUNCH_ENV", "all_gather_object", "all_logsumexp", "all_max",
           "all_min", "all_sum", "all_sum_tensors_", "backend", "backend_for", "barrier",
           "broadcast_object", "broadcast_tensors_", "init", "is_initialized",
           "is_main_process", "launched", "local_rank", "rank", "rank_device",
           "share_bounds", "shutdown", "world_size"]
