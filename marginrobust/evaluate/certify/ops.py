"""The operations certificates support, and how each computes points and boxes.

:mod:`.tracing` reads a model into a :class:`Chain` of these; :mod:`.operator_norms`
bounds their Lipschitz constants. The list of what is supported, and why the rest is
not, is in :mod:`.tracing`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError

__all__ = ["Chain", "NotCertifiable", "Op", "check_pool", "is_leaf", "meta_point",
           "module_op", "pair"]


class NotCertifiable(UserError):
    """The model is not a chain of supported operations; the message names the first one."""


_DROPOUT = nn.modules.dropout._DropoutNd
# Standard layers taken as one operation each, by their exact forward.
_LEAVES = (nn.Linear, nn.Conv2d, nn.ReLU, nn.LeakyReLU, nn.MaxPool2d, nn.AvgPool2d,
           nn.Flatten, nn.Identity, _DROPOUT)


@dataclass
class Op:
    """One operation of the chain, with float64 copies of its parameters.

    Attributes:
        name: Qualified module name (``"features.0"``) or graph node name (``"relu_1"``).
        kind: Module class name, or for a function the layer it equals (``"ReLU"``,
            ``"MaxPool2d"``; ``"Reshape"`` for view / reshape / flatten).
        role: ``linear``, ``conv``, ``relu``, ``leaky``, ``pool`` (max or average; the
            module computes it), ``reshape`` or ``identity``.
        in_shape: Per-example input shape.
        out_shape: Per-example output shape.
        module: The layer (weight layers and pools; for a functional pool, an equal one).
        slope: LeakyReLU's negative slope.
        weight: float64 weight (weight layers; None until the parameters are copied).
        abs_weight: Its absolute value, for interval propagation.
        bias: float64 bias, if any.
    """

    name: str
    kind: str
    role: str
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    module: nn.Module | None = None
    slope: float = 0.0
    weight: torch.Tensor | None = None
    abs_weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    def point(self, x: torch.Tensor) -> torch.Tensor:
        """The operation on a batch (never in place: ``x`` may be the caller's)."""
        if self.role == "linear":
            return F.linear(x, self.weight, self.bias)
        if self.role == "conv":
            m = self.module
            assert isinstance(m, nn.Conv2d)
            return F.conv2d(x, self.weight, self.bias, m.stride, m.padding, m.dilation,
                            m.groups)
        if self.role == "relu":
            return F.relu(x)
        if self.role == "leaky":
            return F.leaky_relu(x, self.slope)
        if self.role == "pool":
            assert self.module is not None
            return self.module(x)
        if self.role == "reshape":
            # Any reshape that keeps the batch is the row-major reshape of each example.
            return x.reshape(x.shape[0], *self.out_shape)
        return x

    def interval(self, mu: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact interval image (center, radius) of the box [mu − r, mu + r]."""
        if self.role == "linear":
            # Over the box, W h ranges over W mu ± |W| r exactly (per coordinate).
            return F.linear(mu, self.weight, self.bias), F.linear(r, self.abs_weight)
        if self.role == "conv":
            m = self.module
            assert isinstance(m, nn.Conv2d)
            args = (m.stride, m.padding, m.dilation, m.groups)
            return (F.conv2d(mu, self.weight, self.bias, *args),
                    F.conv2d(r, self.abs_weight, None, *args))
        if self.role in ("relu", "leaky") or isinstance(self.module, nn.MaxPool2d):
            # Monotone coordinatewise (max-pool: monotone in every input), so the image of
            # a box is the box spanned by the images of its two corners.
            lo, hi = self.point(mu - r), self.point(mu + r)
            return (lo + hi) / 2, (hi - lo) / 2
        # AvgPool2d is linear with nonnegative weights; reshapes and identities move values.
        return self.point(mu), self.point(r)


@dataclass
class Chain:
    """A model read as a chain of operations.

    Attributes:
        model_name: The model's class name, for messages.
        ops: The operations in forward order.
        head: Index of the last Linear, whose outputs are the logits (only identities and
            shape-preserving reshapes follow it); -1 when not asked for.
        input_shape: Per-example input shape the shapes were computed for.
    """

    model_name: str
    ops: list[Op]
    head: int
    input_shape: tuple[int, ...]


def pair(v: int | Sequence[int]) -> tuple[int, int]:
    """An int or a pair of ints (kernel sizes, strides, paddings) as a pair."""
    if isinstance(v, int):
        return v, v
    a, b = tuple(v)
    return int(a), int(b)


def is_leaf(m: nn.Module) -> bool:
    """A supported standard layer computing what its class says: torch's own class, or a
    subclass that keeps its forward (one that overrides it must be traced instead)."""
    for base in _LEAVES:
        if isinstance(m, base):
            return type(m).__module__.startswith("torch.nn") or type(m).forward is base.forward
    return False


def module_op(model_name: str, name: str, m: nn.Module) -> Op:
    """The operation of one supported layer (:func:`is_leaf`), its options checked.

    Raises:
        NotCertifiable: For options certification cannot bound (reflect padding, a
            negative LeakyReLU slope, pooling options that change window divisors).
    """
    where = f"{type(m).__name__} at module {name!r}"

    def refuse(why: str) -> NotCertifiable:
        return NotCertifiable(f"cannot certify {model_name}: {where} {why}")

    if isinstance(m, nn.Linear):
        return Op(name, "Linear", "linear", module=m)
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            raise refuse(f"uses padding_mode={m.padding_mode!r}, and only zero padding is "
                         "supported")
        return Op(name, "Conv2d", "conv", module=m)
    if isinstance(m, nn.ReLU):
        return Op(name, "ReLU", "relu")
    if isinstance(m, nn.LeakyReLU):
        if m.negative_slope < 0:
            raise refuse(f"has negative_slope={m.negative_slope}, and certification needs a "
                         "monotone activation")
        return Op(name, "LeakyReLU", "leaky", slope=float(m.negative_slope))
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        check_pool(m, refuse)
        return Op(name, type(m).__name__, "pool", module=m)
    if isinstance(m, nn.Flatten):
        return Op(name, "Flatten", "reshape", module=m)
    return Op(name, type(m).__name__, "identity")  # Identity, dropout (eval semantics)


def check_pool(m: nn.Module, refuse: Callable[[str], NotCertifiable]) -> None:
    """Raise ``refuse(why)`` for pooling options the certificates cannot bound."""
    if isinstance(m, nn.MaxPool2d) and m.return_indices:
        raise refuse("returns indices")
    if isinstance(m, nn.AvgPool2d) and (
            m.divisor_override is not None or m.ceil_mode
            or (not m.count_include_pad and pair(m.padding) != (0, 0))):
        # These options shrink the divisor of some windows below kernel_h * kernel_w,
        # which breaks the l2 bound sqrt(coverage / (kernel_h * kernel_w)).
        raise refuse("sets divisor_override, ceil_mode or count_include_pad=False with "
                     "padding, and only plain averaging is supported")


def meta_point(step: Op, x: torch.Tensor) -> torch.Tensor:
    """``step`` on a meta tensor (shapes only), with meta stand-ins for its parameters."""
    if step.role in ("linear", "conv"):
        m = step.module
        assert m is not None
        meta = Op(step.name, step.kind, step.role, module=m,
                  weight=torch.empty(m.weight.shape, dtype=torch.float64, device="meta"),
                  bias=None if m.bias is None else
                  torch.empty(m.bias.shape, dtype=torch.float64, device="meta"))
        return meta.point(x)
    if step.role == "reshape":
        assert step.module is not None  # nn.Flatten; functional reshapes are evaluated
        return step.module(x)
    return step.point(x)
