"""Module, Parameter and Sequential: torch's bookkeeping, with an explicit backward pass.

A scratch ``Module`` runs ``forward`` (caching what its backward needs) and ``backward``
(returning the gradient of its input and *adding* into each parameter's ``.grad``, as torch's
autograd accumulates). Parameters and sub-modules are registered by attribute assignment, so
``state_dict`` keys come out exactly as torch names them (``"encoder.0.weight"``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from scratch._validate import as_numpy_array, check_float_dtype


class Parameter:
    """A trainable array: ``.data`` is updated in place by optimizers, ``.grad`` accumulates.

    ``.grad`` is a zero array of the same shape and dtype from the start (torch starts at
    ``None``); ``zero_grad`` refills it with zeros in place, so an optimizer may keep views of it.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray):
        data = np.ascontiguousarray(data)
        check_float_dtype(data.dtype, "Parameter")
        self.data = data
        self.grad = np.zeros_like(data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def zero_grad(self) -> None:
        self.grad.fill(0)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class: registers parameters and sub-modules in assignment order, like torch."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}: call Module.__init__() before assigning attributes"
            )
        # Re-assigning a name keeps its place, as in torch (dict assignment keeps insertion order);
        # a name moves registries (or leaves them) only when the new value is of another kind.
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    # -- the two passes -------------------------------------------------------------------
    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    # -- parameters -----------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self) -> Iterator["Module"]:
        yield from self._modules.values()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield ``(dotted_name, Parameter)`` in torch's order, each parameter once."""
        seen: set[int] = set()
        for module_name, module in self.named_modules(prefix):
            for name, parameter in module._parameters.items():
                if id(parameter) in seen:
                    continue
                seen.add(id(parameter))
                yield (f"{module_name}.{name}" if module_name else name), parameter

    def parameters(self) -> list[Parameter]:
        return [parameter for _, parameter in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(parameter.size for parameter in self.parameters())

    def zero_grad(self) -> None:
        for parameter in self.parameters():
            parameter.zero_grad()

    def train(self, mode: bool = True) -> "Module":
        for _, module in self.named_modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # -- state_dict -----------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter, under torch's keys and shapes."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy arrays (NumPy arrays or torch tensors) into the parameters, in place.

        Every key is checked before anything is written: missing keys, unexpected keys and
        shape mismatches raise one ``KeyError``/``ValueError`` that lists them all, and the
        module is left unchanged. Values are cast to each parameter's dtype.
        """
        owner = type(self).__name__
        if not hasattr(state_dict, "items"):
            raise TypeError(
                f"{owner}.load_state_dict: expected a mapping of names to arrays, "
                f"got {type(state_dict).__name__}"
            )
        own = OrderedDict(self.named_parameters())
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        converted: dict[str, np.ndarray] = {}
        mismatched = []
        for key, value in state_dict.items():
            if key not in own:
                continue
            array = as_numpy_array(value, f"{owner}.load_state_dict[{key!r}]")
            if array.shape != own[key].shape:
                mismatched.append(
                    f"{key!r}: expected shape {own[key].shape}, got {array.shape}"
                )
            converted[key] = array
        problems = []
        if strict and missing:
            problems.append(f"missing keys {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys {unexpected}")
        if mismatched:
            problems.append("shape mismatch " + "; ".join(mismatched))
        if problems:
            raise ValueError(f"{owner}.load_state_dict: " + "; ".join(problems))
        for key, array in converted.items():
            np.copyto(own[key].data, array, casting="unsafe")

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        lines.append(")")
        return "\n".join(lines)

    def extra_repr(self) -> str:
        return ""


class Sequential(Module):
    """Chain of modules; keys ``"0.weight"``, ``"2.bias"``... exactly as torch numbers them."""

    def __init__(self, *modules: Module):
        super().__init__()
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(
                    f"Sequential: item {index} is a {type(module).__name__}, not a scratch Module"
                )
            setattr(self, str(index), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def forward(self, x: np.ndarray) -> np.ndarray:
        for module in self._modules.values():
            x = module(x)
        return x

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        """Back-propagate through the children in reverse order; returns dL/d(input)."""
        for module in reversed(self._modules.values()):
            grad_output = module.backward(grad_output)
        return grad_output
