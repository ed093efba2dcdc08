"""Module, Parameter and Sequential: torch's bookkeeping, with an explicit backward pass.

A scratch ``Module`` runs ``forward`` (caching what its backward needs) and ``backward``
(returning the gradient of its input and *adding* into each parameter's ``.grad``, as torch's
autograd accumulates). Parameters and sub-modules are registered by attribute assignment, so
``state_dict`` keys come out exactly as torch names them (``"encoder.0.weight"``).

In-place edits of an array a layer keeps for its backward are caught there, as in torch
(``scratch.nn.inplace``): ``Sequential`` runs its children as one pass, so that only its input,
its output and views of them are fingerprinted, and checks every child's before any backward runs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from scratch.memory import check_bytes, nbytes
from scratch.nn import inplace
from scratch.validate import as_numpy_array, check_float_dtype, check_real_array, is_integer


class Parameter:
    """A trainable array: ``.data`` is updated in place by optimizers, ``.grad`` accumulates.

    ``.grad`` is a zero array of the same shape and dtype from the start (torch starts at
    ``None``); ``zero_grad`` refills it with zeros in place, so an optimizer may keep views of it.

    ``data`` is shared when it is a C-contiguous, writeable array (as torch shares a tensor's
    storage) and copied otherwise: a strided view, or a read-only array (``np.frombuffer`` over
    ``bytes``, a read-only memory map), could not be updated in place. (torch shares a read-only
    NumPy buffer with a warning and then writes into memory NumPy promised nobody would write.)
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray):
        data = np.asarray(data, order="C")  # keeps a 0-d array 0-d (ascontiguousarray makes it (1,))
        check_float_dtype(data.dtype, "Parameter")
        if not data.flags.writeable:
            data = data.copy()
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


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def flat_layout(parameters) -> tuple[np.ndarray, np.ndarray] | None:
    """``(data, grad)``: 1-D arrays whose consecutive slices are exactly the parameters' ``.data``
    and ``.grad``, in order, when they are (``Module.flatten_parameters``); otherwise None."""
    parameters = list(parameters)
    if not parameters:
        return None
    flats = []
    for attribute in ("data", "grad"):
        arrays = [getattr(p, attribute) for p in parameters]
        base = arrays[0].base
        if not (isinstance(base, np.ndarray) and base.ndim == 1 and base.flags.c_contiguous):
            return None
        itemsize = base.itemsize
        start = (_address(arrays[0]) - _address(base)) // itemsize
        position = start
        for array in arrays:
            if (array.base is not base or array.dtype != base.dtype or not array.flags.c_contiguous
                    or _address(array) != _address(base) + position * itemsize):
                return None
            position += array.size
        flats.append(base[start:position])
    return flats[0], flats[1]


class Module:
    """Base class: registers parameters and sub-modules in assignment order, like torch.

    A module whose ``backward`` accepts ``input_grad=False`` (skip computing dL/dx: nothing
    upstream needs it, as for the first layer of a model) sets ``takes_input_grad = True``.
    """

    takes_input_grad = False
    #: True when forward keeps no array where its caller could reach it except through its return
    #: value (every library layer and container): a ``Sequential`` then vouches for the arrays it
    #: keeps (``scratch.nn.inplace``). A user-defined Module may store intermediate arrays in its
    #: attributes, so its layers fingerprint at their own boundaries.
    _KEEPS_ARRAYS_PRIVATE = False
    #: the attributes a forward pass leaves for the backward pass (a layer's cache); a container
    #: that fails part-way through its forward puts them back, so a refused call changes nothing
    _CACHE_ATTRIBUTES: tuple[str, ...] = ()

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}: call Module.__init__() before assigning attributes"
            )
        # Re-assigning a name keeps its place, as in torch (dict assignment keeps insertion order);
        # a name moves registries (or leaves them) only when the new value is of another kind.
        if name in self.__dict__.get("_buffers", {}) and (value is None or isinstance(value, np.ndarray)):
            self._buffers[name] = value  # a buffer stays a buffer when re-assigned an array (torch)
        elif isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
            self._buffers.pop(name, None)
            self._non_persistent_buffers.discard(name)
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, array: np.ndarray | None, persistent: bool = True) -> None:
        """Register ``array`` (or None: a slot not in use) as state that is not a parameter, as
        torch's ``register_buffer``: it is reached as ``self.name``, listed by ``named_buffers``,
        and (``persistent``, not None) saved and loaded by ``state_dict`` under ``"name"``, after
        this module's parameters. Re-assigning ``self.name`` an array keeps it a buffer."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"{type(self).__name__}.register_buffer: a buffer's name is a non-empty string "
                             f"without '.', got {name!r}")
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError(f"{type(self).__name__}.register_buffer({name!r}): expected a NumPy array or None, "
                            f"got {type(array).__name__}")
        if name in self._parameters or name in self._modules:
            raise KeyError(f"{type(self).__name__}.register_buffer: {name!r} is already a parameter or a module")
        object.__setattr__(self, name, array)
        self._buffers[name] = array
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    # -- the two passes -------------------------------------------------------------------
    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    def _caching_modules(self) -> list["Module"]:
        """This module and its descendants that keep a forward cache, in registration order."""
        found = [self] if self._CACHE_ATTRIBUTES else []
        for child in self._modules.values():
            found.extend(child._caching_modules())
        return found

    def _forward_state(self) -> tuple:
        return tuple(getattr(self, name) for name in self._CACHE_ATTRIBUTES)

    def _restore_forward_state(self, state: tuple) -> None:
        for name, value in zip(self._CACHE_ATTRIBUTES, state):
            object.__setattr__(self, name, value)

    def fuses_with(self, following: "Module") -> bool:
        """Whether a ``Sequential`` may run this module and the next one as one fused pair
        (``forward_fused``/``backward_fused``: the same numbers in fewer passes). Default: no."""
        return False

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

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(dotted_name, array)`` for every buffer that is not None, in torch's order."""
        for module_name, module in self.named_modules(prefix):
            for name, array in module._buffers.items():
                if array is not None:
                    yield (f"{module_name}.{name}" if module_name else name), array

    def buffers(self) -> list[np.ndarray]:
        return [array for _, array in self.named_buffers()]

    def _state_items(self) -> Iterator[tuple[str, np.ndarray, "Module", str | None]]:
        """(key, array, owner, buffer name or None) for everything ``state_dict`` holds, in
        torch's order: each module's parameters, then its persistent buffers, then its children."""
        seen: set[int] = set()
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for name, parameter in module._parameters.items():
                if id(parameter) not in seen:
                    seen.add(id(parameter))
                    yield prefix + name, parameter.data, module, None
            for name, array in module._buffers.items():
                if array is not None and name not in module._non_persistent_buffers:
                    yield prefix + name, array, module, name

    def num_parameters(self) -> int:
        return sum(parameter.size for parameter in self.parameters())

    def zero_grad(self) -> None:
        for parameter in self.parameters():
            parameter.zero_grad()

    def flatten_parameters(self) -> "Module":
        """Move every parameter's ``.data`` and ``.grad`` into one contiguous buffer each.

        Values and shapes are unchanged; each ``.data``/``.grad`` becomes a view of a flat array,
        in ``named_parameters`` order, so an optimizer updates the whole model in one kernel
        call (``scratch.optim.Adam`` does so whenever ``flat_layout`` finds this layout). Arrays
        held from before (a layer's forward cache) keep their old values and stay valid.
        Returns the module. All parameters must share one dtype.
        """
        parameters = self.parameters()
        if not parameters:
            return self
        dtypes = {p.dtype for p in parameters}
        if len(dtypes) != 1:
            raise ValueError(f"{type(self).__name__}.flatten_parameters: parameters have several dtypes "
                             f"{sorted(d.name for d in dtypes)}; cast them to one first")
        total = sum(p.size for p in parameters)
        dtype = parameters[0].dtype
        check_bytes(f"{type(self).__name__}.flatten_parameters: a flat copy of its {total:,} {dtype.name} parameters "
                    f"and their gradients", 2 * nbytes((total,), dtype))
        data = np.empty(total, dtype=parameters[0].dtype)
        grad = np.empty(total, dtype=parameters[0].dtype)
        start = 0
        for parameter in parameters:
            stop = start + parameter.size
            data[start:stop] = parameter.data.reshape(-1)
            grad[start:stop] = parameter.grad.reshape(-1)
            parameter.data = data[start:stop].reshape(parameter.shape)
            parameter.grad = grad[start:stop].reshape(parameter.shape)
            start = stop
        return self

    def train(self, mode: bool = True) -> "Module":
        for _, module in self.named_modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # -- state_dict -----------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter and persistent buffer, under torch's keys, order and shapes."""
        return OrderedDict((key, array.copy()) for key, array, _, _ in self._state_items())

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy arrays (NumPy arrays or torch tensors) into the parameters and buffers, in place.

        Every key is checked before anything is written: missing keys, unexpected keys and
        shape mismatches raise one ``ValueError`` that lists them all; a value that is not an
        array, or holds no real numbers (complex, strings, objects), raises a ``TypeError``
        naming its key; either way the module is left unchanged. Values are cast to each
        parameter's (buffer's) dtype. NaN and inf are loaded as they are, as torch loads them, so that a
        diverged run's weights can still be inspected; a caller that must refuse them checks.
        """
        owner = type(self).__name__
        if not hasattr(state_dict, "items"):
            raise TypeError(
                f"{owner}.load_state_dict: expected a mapping of names to arrays, "
                f"got {type(state_dict).__name__}"
            )
        own = OrderedDict((key, array) for key, array, _, _ in self._state_items())
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        converted: dict[str, np.ndarray] = {}
        mismatched = []
        for key, value in state_dict.items():
            if key not in own:
                continue
            where = f"{owner}.load_state_dict[{key!r}]"
            array = check_real_array(as_numpy_array(value, where), where)
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
            np.copyto(own[key], array, casting="unsafe")  # in the parameter's (buffer's) own dtype

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


def _mutable_state(root: Module) -> list:
    """What a training-mode forward may change besides the caches: every buffer (BatchNorm's
    running statistics and count: the array and a copy) and every module's random generator
    (Dropout's: its state), so that a pass a later child refuses can be undone."""
    state = []
    for _, module in root.named_modules():
        for name, array in module._buffers.items():
            if array is not None:
                state.append((module, name, array, array.copy()))
        generator = module.__dict__.get("generator")
        if isinstance(generator, np.random.Generator):
            state.append((module, None, generator, generator.bit_generator.state))
    return state


def _restore_mutable_state(state) -> None:
    for module, name, held, copy in state:
        if name is None:
            held.bit_generator.state = copy
        else:
            np.copyto(held, copy)
            module._buffers[name] = held
            object.__setattr__(module, name, held)


class Sequential(Module):
    """Chain of modules; keys ``"0.weight"``, ``"2.bias"``... exactly as torch numbers them.

    As torch's: ``Sequential(*modules)``, or ``Sequential(OrderedDict(name=module, ...))`` whose
    names then key the children (``"encoder.weight"``). An empty batch runs through like any other.
    """

    takes_input_grad = True
    _KEEPS_ARRAYS_PRIVATE = True

    def __init__(self, *modules: Module):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            named = list(modules[0].items())
        else:
            named = [(str(index), module) for index, module in enumerate(modules)]
        for index, (name, module) in enumerate(named):
            if not isinstance(module, Module):
                raise TypeError(
                    f"Sequential: item {index} is a {type(module).__name__}, not a scratch Module"
                )
            self._check_child_name(name)
        for name, module in named:
            setattr(self, name, module)

    def _check_child_name(self, name) -> None:
        """A child's name as torch's ``add_module`` takes it: a string, not empty, without ".",
        not an attribute the Sequential already has (it would hide a method), not given twice."""
        if not isinstance(name, str):
            raise TypeError(f"Sequential: child names must be strings, got {name!r} ({type(name).__name__})")
        if not name or "." in name:
            raise KeyError(f"Sequential: a child's name must be a non-empty string without '.', got {name!r}")
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"Sequential: a child cannot be named {name!r}: the attribute already exists")

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def forward(self, input: np.ndarray) -> np.ndarray:
        """Run the children in order; a pair that fuses (Linear then ReLU) runs as one.

        A child that refuses its input (a later layer finding the image too small, say) leaves
        every child's forward cache as it was before this call, not half overwritten, and in
        training mode every buffer (running statistics) and random generator (dropout masks)
        too: torch keeps the updates of the children that ran; scratch's refused call changes
        nothing.

        The whole chain is one ``inplace.Pass``: of the arrays the children keep for backward,
        only those that may share memory with ``x`` or with the returned array are fingerprinted
        (the activations in between cannot be reached from outside). A child that is not a
        library module runs outside the pass (see ``Module._KEEPS_ARRAYS_PRIVATE``).
        """
        x = input  # torch's name for the argument (forward(input=...)); x below
        modules = list(self._modules.values())
        saved = [(module, module._forward_state()) for module in self._caching_modules()]
        mutable = _mutable_state(self) if self.training else ()
        index = 0
        with inplace.Pass(x) as current:
            try:
                while index < len(modules):
                    module = modules[index]
                    if index + 1 < len(modules) and module.fuses_with(modules[index + 1]):
                        x = module.forward_fused(x, modules[index + 1])
                        index += 2
                    elif module._KEEPS_ARRAYS_PRIVATE:
                        x = module(x)
                        index += 1
                    else:
                        with inplace.outside_pass():
                            x = module(x)
                        index += 1
            except Exception:
                for module, state in saved:
                    module._restore_forward_state(state)
                _restore_mutable_state(mutable)
                raise
            current.returns(x)
        return x

    def _check_caches(self, modules, first: int, last: int) -> None:
        """Refuse a backward through ``modules[first..last]`` whose caches could not all be used:
        a child that has not run forward, or neighbours whose caches come from different forward
        passes (one's last output is not the shape the next one last took). Checked before any
        child runs, so that no ``.grad`` is left half accumulated."""
        previous = None
        for position in range(first, last + 1):
            module = modules[position]
            if not module._CACHE_ATTRIBUTES:  # a container or custom module: checks itself
                previous = None
                continue
            if module._cache is None:
                raise RuntimeError(f"Sequential.backward called before forward: child {position} "
                                   f"({type(module).__name__}) has no forward cache")
            if previous is not None and (previous._output_shape, previous._output_dtype) != (
                    module._input_shape, module._input_dtype):
                raise RuntimeError(
                    f"Sequential.backward: child {position - 1} ({type(previous).__name__}) last gave "
                    f"{previous._output_shape} {previous._output_dtype} but child {position} "
                    f"({type(module).__name__}) last took {module._input_shape} {module._input_dtype}: "
                    f"their caches come from different forward passes; run the Sequential forward again")
            previous = module

    def backward(self, grad_output: np.ndarray, *, input_grad: bool = True, start: int | None = None):
        """Back-propagate through the children in reverse order; returns dL/d(input).

        ``input_grad=False``: dL/d(input) is not needed, so the children before the first one
        with parameters are skipped and that one computes no input gradient; returns None.
        ``start``: the index of the child the gradient enters at (default the last), for a caller
        that has already folded the later children's backward into ``grad_output`` (a Sigmoid
        fused with its loss). Fused pairs back-propagate as one, as in ``forward``.

        Before any child runs, the arrays of every child about to run are checked against their
        forward fingerprints (``inplace.Verified``): an input or output modified in place raises
        ``InplaceModificationError`` naming the child, and nothing has changed.
        """
        modules = list(self._modules.values())
        if start is not None and not is_integer(start):
            raise TypeError(f"Sequential.backward: start must be an int index, got {start!r}")
        index = len(modules) - 1 if start is None else int(start)
        if not -1 <= index < len(modules):
            raise ValueError(f"Sequential.backward: start must lie in [-1, {len(modules) - 1}], got {start}")
        first = 0
        if not input_grad:  # the first child holding a parameter (stop at its first one: no full walk)
            first = next((i for i, module in enumerate(modules)
                          if next(module.named_parameters(), None) is not None), len(modules))
        self._check_caches(modules, first, index)
        watches = []  # what the children about to run watch (mostly nothing: see inplace)
        for position in range(first, index + 1):
            child = modules[position]
            for module in (child,) if child._CACHE_ATTRIBUTES else child._caching_modules():
                watches.extend(getattr(module, "_watches", None) or ())
                # a forward that admits no backward (LeakyReLU run in place with a negative slope)
                refusal = module._backward_refusal() if hasattr(module, "_backward_refusal") else None
                if refusal:
                    raise RuntimeError(f"Sequential.backward: child {position} ({type(child).__name__}): {refusal}")
        with inplace.Verified("Sequential.backward", watches, self, "child "):
            while index >= first:
                module = modules[index]
                fused = index >= 1 and index - 1 >= first and modules[index - 1].fuses_with(module)
                owner = modules[index - 1] if fused else module
                skip_input = not input_grad and index - (1 if fused else 0) == first
                options = {"input_grad": False} if skip_input and owner.takes_input_grad else {}
                if fused:
                    grad_output = owner.backward_fused(grad_output, module, **options)
                    index -= 2
                else:
                    grad_output = module.backward(grad_output, **options)
                    index -= 1
        return grad_output if input_grad else None
