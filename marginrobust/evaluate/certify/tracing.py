"""The chain of layers the certificates work on, read from any model by tracing it.

The certificates of :mod:`marginrobust.evaluate.certify.lipschitz_ibp` need the model as a chain
h₀ = x, hₖ₊₁ = opₖ(hₖ) of operations whose Lipschitz constants and interval images are
known. Any ``nn.Module`` whose forward is such a chain qualifies, whatever its Python
class: :func:`build_chain` traces it with ``torch.fx`` (the supported standard layers as
leaves) and reads the graph node by node, so what is certified is what ``forward``
computes, not what the module happens to register. When the whole model cannot be
traced and its forward is ``nn.Sequential``'s, its children are read one by one, so the
message names the child that cannot be traced.

Supported, with eval semantics:

* weight layers: ``nn.Linear``; ``nn.Conv2d`` with zero padding;
* activations: ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu``; ``nn.LeakyReLU``
  and ``F.leaky_relu`` with a slope ≥ 0 (monotone, as interval propagation needs);
* pools: ``nn.MaxPool2d`` / ``F.max_pool2d`` without indices, ``nn.AvgPool2d`` /
  ``F.avg_pool2d`` with plain averaging;
* reshapes that keep every example apart (checked at two batch sizes): ``nn.Flatten``,
  ``torch.flatten``, ``torch.reshape``, ``Tensor.flatten`` / ``view`` / ``reshape``;
* identities: ``nn.Identity``, dropout layers and ``F.dropout`` (the identity in eval
  mode, which is what attacks see), ``Tensor.contiguous``;
* shape queries feeding those reshapes (``Tensor.size``, ``..shape``, integer arithmetic).

Anything else raises :class:`NotCertifiable` naming the first such operation in forward
order: a tensor used twice (a branch), the sum of two tensors (a skip connection),
batch norm (an affine map computed from batch statistics in train mode), other
activations, functional weight layers (``F.linear``, ``F.conv2d``), and forward hooks
(tracing does not run them, so they could change what is computed unseen).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ...errors import UserError
from .ops import Chain, NotCertifiable, Op, check_pool, is_leaf, meta_point, module_op

__all__ = ["Chain", "NotCertifiable", "Op", "build_chain", "certify_reason"]

_RELU_FNS = (F.relu, F.relu_, torch.relu, torch.relu_)
_RELU_METHODS = ("relu", "relu_")
_DROPOUT_FNS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                F.feature_alpha_dropout)
_RESHAPE_FNS = (torch.flatten, torch.reshape)
_RESHAPE_METHODS = ("flatten", "view", "reshape")
_SHAPE_METHODS = ("size", "dim", "numel")
_SHAPE_ATTRS = ("shape", "ndim")
# Integer arithmetic on shapes (x.size(0) * 2 ...); never applied to tensors here.
_SHAPE_ARITHMETIC = (operator.getitem, operator.add, operator.sub, operator.mul,
                     operator.floordiv, operator.neg, operator.mod)
# Parameter names after the input, as fx may pass them positionally or by keyword.
_POOL_PARAMS: dict[Any, tuple[type[nn.Module], tuple[str, ...]]] = {
    F.max_pool2d: (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation",
                                  "ceil_mode", "return_indices")),
    F.avg_pool2d: (nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode",
                                  "count_include_pad", "divisor_override")),
}
# Two batch sizes: a reshape that mixes examples changes the batch size of one of them.
_PROBE_BATCHES = (2, 3)


class _Tracer(fx.Tracer):
    """fx's tracer with every supported layer kept whole, even a subclass of one that does
    not override forward (fx would otherwise trace into it and see ``F.conv2d``)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_leaf(m) or super().is_leaf_module(m, module_qualified_name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line[:160].rstrip(". ")


def _at_node(node: fx.Node, prefix: str) -> str:
    """``at node 'add'``, naming the submodule whose forward made the node, if any."""
    where = f"at node {prefix + node.name!r}"
    stack = node.meta.get("nn_module_stack")
    if stack:
        qual, cls = list(stack.values())[-1]
        where += f" in {getattr(cls, '__name__', cls)} {prefix + str(qual)!r}"
    return where


def _target_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


class _Opaque:
    """The value of a node that is not evaluated (parameters read with get_attr, ...)."""


class _Reader:
    """Reads a traced graph into chain operations, propagating meta tensors for shapes."""

    def __init__(self, model_name: str, batch: int, input_shape: tuple[int, ...]) -> None:
        self.model_name = model_name
        self.batch = batch
        self.value = torch.empty((batch, *input_shape), dtype=torch.float64, device="meta")
        self.ops: list[Op] = []

    def refuse(self, what: str) -> NotCertifiable:
        return NotCertifiable(f"cannot certify {self.model_name}: {what}")

    # ------------------------------------------------------------------ module structure
    def read_module(self, module: nn.Module, prefix: str) -> None:
        """Append the operations of ``module`` (named under ``prefix``) to the chain."""
        if is_leaf(module):
            self.apply(module_op(self.model_name, prefix.rstrip(".") or "(model)",
                                    module))
            return
        try:
            graph = _Tracer().trace(module)
        except Exception as exc:  # fx raises many types: TraceError, TypeError, ...
            if type(module).forward is nn.Sequential.forward:
                for name, child in module.named_children():
                    self.read_module(child, f"{prefix}{name}.")
                return
            where = f"{type(module).__name__} at module {prefix.rstrip('.')!r}" if prefix \
                else "its forward"
            raise self.refuse(f"{where} cannot be traced with torch.fx ({_first_line(exc)})"
                              ) from exc
        self.read_graph(graph, module, prefix)

    def read_graph(self, graph: fx.Graph, module: nn.Module, prefix: str) -> None:
        env: dict[fx.Node, Any] = {}
        data: set[fx.Node] = set()  # tensors computed from the input
        head: fx.Node | None = None  # the chain's current end
        user: dict[fx.Node, fx.Node] = {}  # the data operation that read each data node
        for node in graph.nodes:
            if node.op == "placeholder":
                if head is None:
                    env[node], head = self.value, node
                    data.add(node)
                elif node.users:
                    raise self.refuse(f"its forward takes a second input {node.name!r}")
                continue
            if node.op == "output":
                out = node.args[0]
                if not isinstance(out, fx.Node) or out not in data:
                    raise self.refuse(f"its forward returns a {type(out).__name__}, not one "
                                      "logits tensor")
                if out is not head:
                    raise self.refuse(f"the output of {prefix + out.name!r} is both returned "
                                      f"and read by {prefix + user[out].name!r} (a branch)")
                return
            if node.op == "get_attr":
                env[node] = _Opaque()
                continue
            inputs = list(dict.fromkeys(n for n in _flat(node.args, node.kwargs)
                                        if isinstance(n, fx.Node) and n in data))
            if not inputs or self._is_shape_query(node):
                env[node] = self._shape_value(node, env)
                continue
            if len(inputs) > 1:
                name = _target_name(node)
                why = "a skip connection" if name in ("add", "iadd", "sub", "isub") \
                    else "it combines several tensors"
                raise self.refuse(f"{name} ({why}) {_at_node(node, prefix)} is not a "
                                  "supported operation")
            step = self._step(node, module, prefix, env)
            if inputs[0] is not head:
                raise self.refuse(f"the output of {prefix + inputs[0].name!r} is read by "
                                  f"both {prefix + user[inputs[0]].name!r} and "
                                  f"{prefix + node.name!r} (a branch)")
            user[head] = node
            functional_reshape = step.role == "reshape" and step.module is None
            self.apply(step, self._evaluate(node, env, step) if functional_reshape else None)
            env[node], head = self.value, node
            data.add(node)

    # ------------------------------------------------------------------ single nodes
    @staticmethod
    def _is_shape_query(node: fx.Node) -> bool:
        if node.op == "call_method":
            return node.target in _SHAPE_METHODS
        return (node.op == "call_function" and node.target is getattr
                and len(node.args) == 2 and node.args[1] in _SHAPE_ATTRS)

    def _shape_value(self, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
        """A shape query or integer arithmetic, evaluated; anything else stays opaque."""
        if not (self._is_shape_query(node) or (node.op == "call_function"
                                               and node.target in _SHAPE_ARITHMETIC)):
            return _Opaque()
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: env[n])
        values = list(_flat(args, kwargs))
        if any(isinstance(v, _Opaque) for v in values) or (
                not self._is_shape_query(node) and any(isinstance(v, torch.Tensor)
                                                       for v in values)):
            return _Opaque()
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        return node.target(*args, **kwargs)  # type: ignore[operator]

    def _step(self, node: fx.Node, module: nn.Module, prefix: str,
              env: dict[fx.Node, Any]) -> Op:
        """The chain operation of one data node, or NotCertifiable naming it."""
        name = f"{prefix}{node.name}"
        if node.op == "call_module":
            sub = module.get_submodule(str(node.target))
            qual = f"{prefix}{node.target}"
            if not is_leaf(sub):
                raise self.refuse(f"{type(sub).__name__} at module {qual!r} is not a "
                                  "supported operation")
            return module_op(self.model_name, qual, sub)
        target, fn = node.target, _target_name(node)
        unsupported = self.refuse(f"{fn} {_at_node(node, prefix)} is not a supported "
                                  "operation")
        if node.op == "call_method":
            if target in _RELU_METHODS:
                return Op(name, "ReLU", "relu")
            if target in _RESHAPE_METHODS:
                return Op(name, "Reshape", "reshape")
            if target == "contiguous":
                return Op(name, "Identity", "identity")
            raise unsupported
        if any(target is f for f in _RELU_FNS):
            return Op(name, "ReLU", "relu")
        if target is F.leaky_relu:
            slope = node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1
                                    else 0.01)
            if not isinstance(slope, (int, float)) or slope < 0:
                raise self.refuse(f"leaky_relu at node {name!r} has negative_slope={slope}, "
                                  "and certification needs a monotone activation")
            return Op(name, "LeakyReLU", "leaky", slope=float(slope))
        if any(target is f for f in _DROPOUT_FNS):
            return Op(name, "Dropout", "identity")
        if any(target is f for f in _RESHAPE_FNS):
            return Op(name, "Reshape", "reshape")
        for fn_obj, (cls, params) in _POOL_PARAMS.items():
            if target is fn_obj:
                options = dict(zip(params, node.args[1:]))
                options.update({k: v for k, v in node.kwargs.items() if k in params})
                if any(isinstance(v, fx.Node) for v in options.values()):
                    raise self.refuse(f"{fn} at node {name!r} takes options computed in "
                                      "forward, which certification does not read")
                pool = cls(**options)
                check_pool(pool, lambda why: self.refuse(f"{fn} at node {name!r} {why}"))
                return Op(name, cls.__name__, "pool", module=pool)
        raise unsupported

    def _evaluate(self, node: fx.Node, env: dict[fx.Node, Any], step: Op) -> torch.Tensor:
        """A functional reshape on the meta value (its arguments may be shape queries)."""
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: env[n])
        if any(isinstance(v, _Opaque) for v in _flat(args, kwargs)):
            raise self.refuse(f"{_target_name(node)} at node {step.name!r} takes a shape "
                              "computed in forward, which certification does not read")
        try:
            if node.op == "call_method":
                return getattr(args[0], str(node.target))(*args[1:], **kwargs)
            return node.target(*args, **kwargs)  # type: ignore[operator]
        except RuntimeError as exc:
            raise self._shape_error(step, exc) from exc

    def _shape_error(self, step: Op, exc: Exception) -> UserError:
        shape = tuple(self.value.shape[1:])
        return UserError(f"{self.model_name}: inputs of shape {shape} do not fit "
                         f"{step.kind} {step.name!r} ({_first_line(exc)})")

    def apply(self, step: Op, value: torch.Tensor | None = None) -> None:
        """Append ``step`` and move the meta value through it (or to ``value``)."""
        before = self.value
        if value is None:
            try:
                value = meta_point(step, before)
            except RuntimeError as exc:
                raise self._shape_error(step, exc) from exc
        if value.ndim == 0 or value.shape[0] != self.batch:
            raise self.refuse(f"{step.kind} at {step.name!r} does not keep the examples of "
                              "a batch apart")
        step.in_shape, step.out_shape = tuple(before.shape[1:]), tuple(value.shape[1:])
        self.value = value
        self.ops.append(step)


def _flat(*values: Any) -> Iterator[Any]:
    for v in values:
        if isinstance(v, (list, tuple)):
            yield from _flat(*v)
        elif isinstance(v, dict):
            yield from _flat(*v.values())
        else:
            yield v


def _read(model: nn.Module, input_shape: tuple[int, ...], batch: int) -> list[Op]:
    reader = _Reader(type(model).__name__, batch, input_shape)
    reader.read_module(model, "")
    return reader.ops


def _head(model_name: str, ops: list[Op]) -> int:
    """Index of the last Linear; only identities and same-shape reshapes may follow."""
    linear = [i for i, op in enumerate(ops) if op.role == "linear"]
    if not linear:
        raise NotCertifiable(f"cannot certify {model_name}: its logits must come from a "
                             "final nn.Linear, and it has none")
    head = linear[-1]
    for op in ops[head + 1:]:
        if not (op.role == "identity" or (op.role == "reshape"
                                          and op.out_shape == op.in_shape)):
            raise NotCertifiable(f"cannot certify {model_name}: its logits must come from "
                                 f"the last Linear ({ops[head].name!r}), but {op.kind} at "
                                 f"{op.name!r} follows it")
    if len(ops[head].in_shape) != 1:
        raise NotCertifiable(f"cannot certify {model_name}: the last Linear "
                             f"({ops[head].name!r}) must see flattened features, not shape "
                             f"{ops[head].in_shape}")
    return head


def build_chain(model: nn.Module, input_shape: Sequence[int], parameters: bool = True,
                logits: bool = True) -> Chain:
    """``model`` read as a chain of supported operations for inputs of ``input_shape``.

    Args:
        model: Any classifier module (its mode does not matter: eval semantics).
        input_shape: Per-example input shape, e.g. ``(1, 28, 28)``.
        parameters: Copy the weights to float64 (False: only check and compute shapes).
        logits: Require the chain to end in a Linear producing the logits (False: any
            chain, ``head`` is then -1).

    Raises:
        NotCertifiable: If the forward is not a chain of supported operations (ending in
            a Linear, with ``logits``); the message names the first operation that is not.
        UserError: If inputs of ``input_shape`` do not fit the model.
    """
    if not isinstance(model, nn.Module):
        raise UserError(f"certification needs an nn.Module, not {type(model).__name__}")
    shape = tuple(int(v) for v in input_shape)
    name = type(model).__name__
    for qual, m in model.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            # A hook can change what the module computes, and tracing does not run it.
            where = f"{type(m).__name__} at module {qual!r}" if qual else "the model"
            raise NotCertifiable(f"cannot certify {name}: {where} has forward hooks, which "
                                 "certification cannot read")
    ops = _read(model, shape, _PROBE_BATCHES[0])
    for batch in _PROBE_BATCHES[1:]:
        again = _read(model, shape, batch)
        for a, b in zip(again, ops):
            if a.out_shape != b.out_shape:
                raise NotCertifiable(f"cannot certify {name}: {a.kind} at {a.name!r} gives "
                                     "each example a shape that depends on the batch size")
    head = _head(name, ops) if logits else -1
    if parameters:
        for op in ops:
            if op.role in ("linear", "conv"):
                m = op.module
                assert m is not None
                op.weight = m.weight.detach().to(torch.float64)
                op.abs_weight = op.weight.abs()
                if m.bias is not None:
                    op.bias = m.bias.detach().to(torch.float64)
    return Chain(name, ops, head, shape)


def certify_reason(model: nn.Module, input_shape: Sequence[int]) -> str | None:
    """Why ``model`` cannot be certified for inputs of ``input_shape``, or None if it can.

    The sentence is the message :func:`build_chain` (and so every certificate) would raise,
    e.g. ``"cannot certify MyNet: add (a skip connection) at node 'add' is not a supported
    operation"``. Inputs that do not fit the model still raise :class:`UserError`.
    """
    try:
        build_chain(model, input_shape, parameters=False)
    except NotCertifiable as exc:
        return str(exc)
    return None

