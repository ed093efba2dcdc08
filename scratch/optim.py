"""SGD, Adam and AdamW with torch.optim's exact update rules, as Numba kernels.

Derivations: docs/optim.md. Each optimizer updates ``Parameter.data`` in place from
``Parameter.grad``; like torch, ``params`` may be an iterable of Parameters, of named parameters
(``(name, Parameter)`` pairs, as ``model.named_parameters()`` yields them) or of dicts (parameter
groups with their own hyper-parameters, whose 'params' may be named too). ``state_dict()`` mirrors
torch's layout: ``{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}``, with
``"param_names"`` in each group that was given names.

torch's implementation switches (``foreach``, ``fused``, ``capturable``, ``differentiable``) are
taken with the values that leave the numbers of a CPU float step as torch's single-tensor rule
gives them, which is the rule the kernels follow: ``foreach`` None, False or True (torch's
multi-tensor path gives the same bits on CPU tensors); ``fused`` None or False; ``capturable``
and ``differentiable`` False. The others are refused at construction, each with its reason:
``fused=True`` (torch's fused CPU kernel rounds differently, by up to an ulp), ``differentiable=True``
(an update differentiated by autograd: scratch has none; for Adam it also changes the numbers),
``capturable=True`` (CUDA-graph capture: torch itself refuses it at step for CPU tensors), and the
combinations torch refuses (``fused`` with ``foreach`` or ``differentiable``). A torch Tensor as a
hyper-parameter (``lr``, ``betas``, ``weight_decay``) is refused: scratch has no tensors.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from scratch.kernels import optim as kernels
from scratch.nn.module import Module, Parameter, flat_layout
from scratch.validate import as_numpy_array, check_real_array, check_real_number, is_integer, is_real_number, is_torch_tensor

#: the flags an optimizer's group may hold: True/False (or 0/1); torch's "foreach" and "fused"
#: may also be None (let torch choose, which on CPU tensors is the single-tensor rule)
_FLAGS = ("maximize", "nesterov", "amsgrad", "capturable", "differentiable", "decoupled_weight_decay")
_OPTIONAL_FLAGS = ("foreach", "fused")
#: the hyper-parameters torch takes as a Tensor too (for torch.compile / CUDA-graph capture)
_TENSOR_VALUED = ("lr", "weight_decay", "betas")


def _is_flag(value) -> bool:
    """True/False, or 0/1 as torch also takes them."""
    return isinstance(value, (bool, np.bool_)) or (is_real_number(value) and value in (0, 1))


def _refuse_tensors(group: dict, owner: str) -> None:
    """A torch Tensor where torch also takes one (``lr=torch.tensor(0.01)``) is refused by name:
    scratch has no tensors, and its kernels take the value as a scalar of the parameters' dtype."""
    for name in _TENSOR_VALUED:
        value = group.get(name)
        values = value if isinstance(value, (list, tuple)) else (value,)
        if any(is_torch_tensor(v) for v in values):
            raise TypeError(f"{owner}: {name} is a torch Tensor ({value!r}); scratch takes Python numbers "
                            f"(it has no tensors): pass float({name}) instead")


def _check_switches(group: dict, owner: str) -> None:
    """torch's implementation switches: the values that keep torch's single-tensor numbers on
    CPU float tensors pass; the combinations torch refuses raise as torch does; the rest are
    refused with the reason (module docstring)."""
    for flag in _FLAGS:
        if flag in group and not _is_flag(group[flag]):
            raise TypeError(f"{owner}: {flag} must be True or False, got {group[flag]!r}")
    for flag in _OPTIONAL_FLAGS:
        if flag in group and group[flag] is not None and not _is_flag(group[flag]):
            raise TypeError(f"{owner}: {flag} must be True, False or None, got {group[flag]!r}")
    if group.get("fused"):
        if group.get("foreach"):
            raise RuntimeError(f"{owner}: `fused` and `foreach` cannot be `True` together (torch refuses "
                               f"them too); got fused=True, foreach=True")
        if group.get("differentiable"):
            raise RuntimeError(f"{owner}: `fused` does not support `differentiable` (torch refuses them "
                               f"too); got fused=True, differentiable=True")
        raise NotImplementedError(
            f"{owner}: fused=True is not implemented: torch's fused CPU kernel rounds differently from its "
            f"single-tensor rule, which scratch follows bit for bit; pass fused=None or False")
    if group.get("differentiable"):
        raise NotImplementedError(
            f"{owner}: differentiable=True is not implemented: it makes torch record the update for "
            f"autograd (and for Adam changes its numbers); scratch has no autograd; pass differentiable=False")
    if group.get("capturable"):
        raise ValueError(f"{owner}: capturable=True is for CUDA-graph capture on an accelerator (torch refuses "
                         f"it at step for CPU tensors) and scratch runs on the CPU; pass capturable=False")


def _split_names(members: list, owner: str, number: int) -> tuple[list, list | None]:
    """``(parameters, names)`` of a group's 'params': torch's named parameters are ``(name,
    Parameter)`` tuples (``model.named_parameters()``), all or none of them; names is None when
    the group has none."""
    parameters, names = [], []
    for member in members:
        if isinstance(member, tuple):
            if len(member) != 2:
                raise TypeError(f"{owner}: a named parameter is a (name, Parameter) pair, got a tuple of "
                                f"{len(member)} in group {number}")
            names.append(member[0])
            member = member[1]
        parameters.append(member)
    if names and len(names) != len(parameters):
        raise ValueError(f"{owner}: all optimizer params should be with/without names. Some param names are "
                         f"missing: group {number} names {len(names)} of its {len(parameters)} parameters")
    return parameters, (names or None)


def _check_names(names, count: int, where: str) -> list:
    """A group's 'param_names' given as such (not as pairs): one per parameter."""
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)) or len(names) != count:
        got = f"{len(names)} names" if isinstance(names, (list, tuple)) else repr(names)
        raise ValueError(f"{where}: 'param_names' must be a list of one name per parameter ({count}), got {got}")
    return list(names)


def _parameter_list(params, owner: str, where: str) -> list:
    """``params`` as a list, refusing what cannot be one (a Module, a number, None)."""
    if isinstance(params, Module):
        raise TypeError(f"{owner}: {where} must be an iterable of Parameters, got a {type(params).__name__} "
                        f"(a Module): pass its .parameters()")
    if isinstance(params, (str, bytes, np.ndarray)) or not hasattr(params, "__iter__"):
        raise TypeError(f"{owner}: {where} must be an iterable of Parameters, got {type(params).__name__}")
    return list(params)


def _check_state_layout(state_dict, owner: str) -> tuple[list, dict]:
    """``(param_groups, state)`` of a saved state, once its outer layout is torch's: a dict with
    exactly those keys, a list of dicts with a 'params' list each, and a dict."""
    if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
        got = sorted(map(str, state_dict)) if isinstance(state_dict, dict) else type(state_dict).__name__
        raise ValueError(f"{owner}: expected a dict with exactly 'state' and 'param_groups', got {got}")
    groups, saved_state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(groups, (list, tuple)):
        raise ValueError(f"{owner}: 'param_groups' must be a list of dicts, got {type(groups).__name__}")
    for number, group in enumerate(groups):
        if not (isinstance(group, dict) and isinstance(group.get("params"), (list, tuple))):
            got = f"keys {sorted(map(str, group))}" if isinstance(group, dict) else type(group).__name__
            raise ValueError(f"{owner}: saved parameter group {number} must be a dict with a 'params' "
                             f"list, got {got}")
    if not isinstance(saved_state, dict):
        raise ValueError(f"{owner}: 'state' must be a dict of parameter index to dict, "
                         f"got {type(saved_state).__name__}")
    return groups, saved_state


def _index_parameters(groups: list, param_groups: list, owner: str) -> dict:
    """Saved parameter index -> this optimizer's Parameter, pairing the groups position by
    position; each index an int (not a bool) that appears once."""
    index_to_param = {}
    for saved, own in zip(groups, param_groups):
        for saved_index, parameter in zip(saved["params"], own["params"]):
            if not is_integer(saved_index):
                raise ValueError(f"{owner}: parameter indices in 'param_groups' must be ints, got {saved_index!r}")
            if int(saved_index) in index_to_param:
                raise ValueError(f"{owner}: parameter index {saved_index} appears twice in 'param_groups'")
            index_to_param[int(saved_index)] = parameter
    return index_to_param


def _state_index(key, index_to_param: dict, owner: str) -> int:
    """A 'state' key as the parameter index it names: an int, or its text (a state that went
    through JSON), never a bool or a Python float; it must be an index of 'param_groups'."""
    try:
        index = None if isinstance(key, (bool, float)) else int(key)
    except (TypeError, ValueError):
        index = None
    if index is None:
        raise ValueError(f"{owner}: 'state' keys must be parameter indices, got {key!r}")
    if index not in index_to_param:
        raise ValueError(f"{owner}: state for unknown parameter index {index}")
    return index


def _load_step(value, where: str) -> float:
    """A saved step count as a float >= 0; torch keeps it as a 0-d tensor, taken too."""
    if is_torch_tensor(value) or isinstance(value, np.ndarray):
        value = as_numpy_array(value, where)
        value = value.reshape(()) if value.size == 1 else value
    return check_real_number(value, where, "the step count", minimum=0.0)


def _load_buffer(value, where: str, parameter: Parameter) -> np.ndarray:
    """A saved buffer (array or tensor of real numbers, of the parameter's shape) as a
    C-contiguous copy in the parameter's dtype."""
    array = check_real_array(as_numpy_array(value, where), where)
    if array.shape != parameter.shape:
        raise ValueError(f"{where} has shape {array.shape}, its parameter has {parameter.shape}")
    return np.array(array, dtype=parameter.dtype, order="C")


class Optimizer:
    """Parameter groups, hyper-parameter checks, zero_grad and torch-shaped state_dict."""

    defaults: dict = {}

    def __init__(self, params, defaults: dict):
        owner = type(self).__name__
        if isinstance(params, Parameter):
            raise TypeError(f"{owner}: params must be an iterable of Parameters, got a single Parameter")
        params = _parameter_list(params, owner, "params")
        if not params:
            raise ValueError(f"{owner}: got an empty parameter list")
        self.defaults = dict(defaults)
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}  # keyed by id(parameter)
        self._flat_cache: dict[int, tuple] = {}  # group index -> (arrays it was built from, layout)
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own hyper-parameters (the rest from the defaults),
        as torch's ``add_param_group``: its 'params' a Parameter, a list of them or of
        ``(name, Parameter)`` pairs (then ``param_names`` records the names). Everything is
        checked before the group is added."""
        owner = type(self).__name__
        number = len(self.param_groups)
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError(f"{owner}: parameter groups must be dicts with a 'params' entry, "
                            f"got {type(param_group).__name__} at position {number}")
        unknown = set(param_group) - set(self.defaults) - {"params", "param_names"}
        if unknown:
            raise ValueError(f"{owner}: unknown hyper-parameters {sorted(unknown)}")
        members = param_group["params"]
        if isinstance(members, (set, frozenset)):
            raise TypeError(f"{owner}: optimizer parameters need to be organized in ordered collections, but "
                            f"the ordering of tensors in sets will change between runs; group {number}'s 'params' "
                            f"is a set: pass a list")
        members = [members] if isinstance(members, Parameter) else members  # as torch takes one tensor
        members = _parameter_list(members, owner, f"group {number}'s 'params'")
        parameters, names = _split_names(members, owner, number)
        group = {**self.defaults, **param_group, "params": parameters}
        if names is not None:
            group["param_names"] = names
        elif "param_names" in group:
            group["param_names"] = _check_names(group["param_names"], len(parameters), f"{owner}: group {number}")
        self._check_members(parameters, owner, number)
        if self.param_groups and ("param_names" in group) != ("param_names" in self.param_groups[0]):
            kind = "with names" if "param_names" in group else "without names"
            raise ValueError(f"{owner}: all optimizer param groups should be with/without names. cannot add "
                             f"param group {kind} to the optimizer (group {number})")
        self._check_hyperparameters(group)
        self.param_groups.append(group)

    def _check_members(self, parameters: list, owner: str, number: int) -> None:
        """Each one a C-contiguous scratch Parameter, in no group yet and not twice in this one
        (torch warns about a repeat within a group, then updates it twice per step)."""
        held = {id(p) for group in self.param_groups for p in group["params"]}
        seen: set[int] = set()
        for parameter in parameters:
            if not isinstance(parameter, Parameter):
                raise TypeError(f"{owner}: expected scratch Parameters, got {type(parameter).__name__}")
            if id(parameter) in held:
                raise ValueError(f"{owner}: a parameter appears in more than one group")
            if id(parameter) in seen:
                raise ValueError(f"{owner}: a parameter appears twice in group {number} (torch warns, then "
                                 f"updates it twice per step); list each parameter once")
            if not parameter.data.flags.c_contiguous:
                raise ValueError(f"{owner}: parameter data must be C-contiguous")
            seen.add(id(parameter))

    def _check_hyperparameters(self, group: dict) -> None:
        """Refuse a value torch.optim refuses, and anything that is not a number (or flag) at all.

        lr may be inf, as torch allows; NaN is refused everywhere."""
        owner = type(self).__name__
        _refuse_tensors(group, owner)
        check_real_number(group["lr"], f"{owner}: invalid learning rate", "lr", minimum=0.0, allow_inf=True)
        check_real_number(group.get("weight_decay", 0.0), f"{owner}: invalid weight_decay", "weight_decay",
                          minimum=0.0)
        _check_switches(group, owner)

    def zero_grad(self) -> None:
        """Fill every gradient with zeros in place."""
        for group in self.param_groups:
            for parameter in group["params"]:
                parameter.zero_grad()

    def _check_step(self) -> None:
        """Before any parameter moves: each ``.grad`` is an array of its parameter's shape and
        dtype, and each ``.data`` still C-contiguous (an update through a copy would be lost).
        One bad parameter would otherwise leave the step applied to the parameters before it."""
        owner = f"{type(self).__name__}.step"
        for index, parameter in self._indexed_params():
            data, grad = parameter.data, parameter.grad
            if not (isinstance(grad, np.ndarray) and grad.shape == data.shape and grad.dtype == data.dtype):
                got = (f"shape {grad.shape}, {grad.dtype}" if isinstance(grad, np.ndarray)
                       else type(grad).__name__)
                raise ValueError(f"{owner}: parameter {index}'s .grad must be an array of its shape "
                                 f"{data.shape} and dtype {data.dtype}, got {got}")
            if not data.flags.c_contiguous:
                raise ValueError(f"{owner}: parameter {index}'s .data (shape {data.shape}) must be "
                                 f"C-contiguous, got a strided view")
            self._check_writeable(owner, index, parameter)

    def _check_writeable(self, owner: str, index: int, parameter: Parameter) -> None:
        """Refuse a parameter whose ``.data`` or ``.grad``, or a state buffer of it, is read-only:
        the step writes ``.data`` and the state in place (and the SGD kernel may take ``.grad`` as
        its momentum buffer); backward and zero_grad write ``.grad``. Checked for each parameter
        on its own, so a flat buffer whose view was marked read-only is refused too."""
        state = self.state.get(id(parameter), {})
        arrays = [(".data", parameter.data, "a step updates it", "give it a writeable array, e.g. np.array(data)"),
                  (".grad", parameter.grad, "backward and zero_grad write it",
                   "give it a writeable array, e.g. np.array(grad)")]
        arrays += [(f"state {name!r}", value, "a step updates it",
                    "load a writeable copy, e.g. optimizer.load_state_dict(optimizer.state_dict())")
                   for name, value in state.items() if isinstance(value, np.ndarray)]
        for label, array, writer, remedy in arrays:
            if not array.flags.writeable:
                raise ValueError(f"{owner}: parameter {index} (shape {parameter.data.shape}) is read-only (its "
                                 f"{label} array is not writeable, and {writer} in place); {remedy}")

    def step(self, closure=None):
        """One update of every parameter from its ``.grad``. ``closure`` (optional, as torch's): a
        callable that recomputes the loss and the gradients, called first; its value is returned."""
        if closure is not None and not callable(closure):
            raise TypeError(f"{type(self).__name__}.step: closure must be callable or None, "
                            f"got {type(closure).__name__}")
        loss = closure() if closure is not None else None
        self._check_step()
        self._step()
        return loss

    def _step(self) -> None:
        for group in self.param_groups:
            for parameter in group["params"]:
                self._update(parameter, group, self.state.setdefault(id(parameter), {}))

    def _update(self, parameter: Parameter, group: dict, state: dict) -> None:
        raise NotImplementedError

    # -- state_dict, in torch's layout ----------------------------------------------------
    def _indexed_params(self):
        index = 0
        for group in self.param_groups:
            for parameter in group["params"]:
                yield index, parameter
                index += 1

    def state_dict(self) -> dict:
        """``{"state": {i: {name: array or float}}, "param_groups": [...]}``; copies, not views."""
        state = {}
        for index, parameter in self._indexed_params():
            if self.state.get(id(parameter)):
                state[index] = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                for k, v in self.state[id(parameter)].items()}
        groups, index = [], 0
        for group in self.param_groups:
            entry = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            entry["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(entry)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state saved by this optimizer or by the torch.optim twin (tensors accepted).

        Everything is checked before anything changes: group count and sizes, state keys,
        buffer shapes. Buffers are copied and cast to each parameter's dtype.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        groups, saved_state = _check_state_layout(state_dict, owner)
        self._check_group_sizes(groups, owner)
        index_to_param = _index_parameters(groups, self.param_groups, owner)
        new_state = self._load_buffers(saved_state, index_to_param, owner)
        new_groups = self._load_param_groups(groups, owner)
        self.param_groups = new_groups
        self.state = new_state
        self._flat_cache = {}

    def _check_group_sizes(self, groups: list, owner: str) -> None:
        """Refuse a saved state whose groups differ from this optimizer's in number or size."""
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{owner}: {len(groups)} parameter groups saved, optimizer has {len(self.param_groups)}")
        for saved, own in zip(groups, self.param_groups):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(f"{owner}: a saved group has {len(saved['params'])} parameters, "
                                 f"the optimizer's has {len(own['params'])}")

    def _load_buffers(self, saved_state: dict, index_to_param: dict, owner: str) -> dict:
        """The new ``self.state``: each saved entry checked, converted and keyed by id(parameter)."""
        new_state = {}
        for key, entries in saved_state.items():
            key = _state_index(key, index_to_param, owner)
            parameter = index_to_param[key]
            new_state[id(parameter)] = self._load_entries(key, entries, parameter, owner)
        return new_state

    def _load_entries(self, key: int, entries, parameter: Parameter, owner: str) -> dict:
        """One parameter's saved state as this optimizer keeps it: known names only, the step
        count a float, each buffer a C-contiguous copy in the parameter's dtype and shape."""
        if not isinstance(entries, dict):
            raise ValueError(f"{owner}: state {key} must be a dict of buffers, got {type(entries).__name__}")
        unknown = sorted(set(entries) - set(self._state_names))
        if unknown:
            raise ValueError(f"{owner}: state {key} has unknown entries {unknown}; "
                             f"{type(self).__name__} keeps {sorted(self._state_names)}")
        converted = {}
        for name, value in entries.items():
            where = f"{owner}: state {key}/{name!r}"
            if name == "step":
                converted[name] = _load_step(value, where)
            elif value is not None:
                converted[name] = _load_buffer(value, where, parameter)
        self._check_state_entry(converted, f"{owner}: state {key}")
        return converted

    def _load_param_groups(self, groups: list, owner: str) -> list:
        """The new ``self.param_groups``: each group's own Parameters with the saved values of the
        hyper-parameters this optimizer knows, checked as the constructor checks them."""
        new_groups = []
        for number, (saved, own) in enumerate(zip(groups, self.param_groups)):
            # Only the hyper-parameters this optimizer knows; torch adds flags such as "foreach".
            group = {**own, **{k: saved[k] for k in own if k not in ("params", "param_names") and k in saved}}
            if isinstance(group.get("betas"), list):  # torch's and JSON's lists, as a tuple
                group["betas"] = tuple(group["betas"])
            if "param_names" in saved:  # torch: the saved names replace the optimizer's; else it keeps its own
                group["param_names"] = _check_names(saved["param_names"], len(own["params"]),
                                                    f"{owner}: saved parameter group {number}")
            try:
                self._check_hyperparameters(group)
            except (TypeError, ValueError, RuntimeError) as error:  # NotImplementedError is a RuntimeError
                raise type(error)(f"{owner}: saved parameter group {number}: {error}") from None
            new_groups.append(group)
        return new_groups

    #: the names a parameter's state may hold (torch.optim's)
    _state_names: tuple[str, ...] = ()

    def _check_state_entry(self, entry: dict, where: str) -> None:
        pass

    def __repr__(self) -> str:
        settings = {k: v for k, v in self.param_groups[0].items() if k not in ("params", "param_names")}
        return f"{type(self).__name__}({settings})"


class SGD(Optimizer):
    """Stochastic gradient descent with torch's momentum, dampening, Nesterov, weight decay and
    ``maximize`` (ascend: the step uses −g). torch's signature; ``foreach`` (None, False or True),
    ``differentiable`` (False) and ``fused`` (None or False) are taken where they leave torch's
    numbers unchanged on CPU float tensors and refused otherwise (module docstring)."""

    _state_names = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False, fused=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                                      foreach=foreach, differentiable=differentiable, fused=fused))

    def _check_hyperparameters(self, group):
        super()._check_hyperparameters(group)
        check_real_number(group["momentum"], "SGD: invalid momentum", "momentum", minimum=0.0)
        check_real_number(group["dampening"], "SGD: invalid dampening", "dampening")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: Nesterov momentum requires a momentum > 0 and zero dampening, got momentum "
                             f"{group['momentum']!r} and dampening {group['dampening']!r}")

    def _update(self, parameter, group, state):
        momentum = float(group["momentum"])
        first_step = momentum != 0 and "momentum_buffer" not in state
        if momentum != 0 and first_step:
            state["momentum_buffer"] = np.zeros_like(parameter.data)
        buffer = state.get("momentum_buffer", parameter.grad)  # unused when momentum == 0
        kernels.sgd_step(parameter.data.reshape(-1), parameter.grad.reshape(-1), buffer.reshape(-1),
                         *sgd_scalars(group, parameter.dtype), first_step)


def sgd_scalars(group: dict, dtype) -> tuple:
    """``sgd_step``'s scalar arguments for a parameter group: each Python float cast to ``dtype``,
    as each torch op casts its Python scalar argument to the tensor's dtype."""
    scalar = np.dtype(dtype).type
    return (scalar(-float(group["lr"])), scalar(group["momentum"]), scalar(1 - float(group["dampening"])),
            scalar(group["weight_decay"]), bool(group["nesterov"]), bool(group["maximize"]))


def adam_scalars(group: dict, step: float, dtype, decoupled: bool | None = None) -> tuple:
    """``adam_step``'s scalar arguments for a parameter group at step ``step`` (1, 2, ...).

    The bias corrections and step size are computed in Python float64 from the step count, as
    torch does; then each is cast to ``dtype``, as each torch op casts its Python scalar.
    ``decoupled``: AdamW's weight decay p ← p(1 − lr·wd) instead of Adam's g ← g + wd·p; None
    takes the group's ``decoupled_weight_decay`` (False when it has none).
    """
    if decoupled is None:
        decoupled = bool(group.get("decoupled_weight_decay", False))
    beta1, beta2 = (float(b) for b in group["betas"])
    lr, weight_decay = float(group["lr"]), float(group["weight_decay"])
    step_size = lr / (1 - beta1 ** step)
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    scalar = np.dtype(dtype).type
    beta1_weight = scalar(1 - beta1)
    if weight_decay == 0:
        decay = kernels.NO_DECAY
    else:
        decay = kernels.DECOUPLED_DECAY if decoupled else kernels.L2_DECAY
    return (scalar(weight_decay), scalar(1 - lr * weight_decay), beta1_weight, scalar(1) - beta1_weight,
            scalar(beta2), scalar(1 - beta2), scalar(group["eps"]), scalar(-step_size),
            scalar(bias_correction2_sqrt), decay, bool(group["amsgrad"]), bool(group["maximize"]))


class Adam(Optimizer):
    """Adam (Kingma & Ba) as torch.optim.Adam: ``weight_decay`` adds wd·p to the gradient, or,
    with ``decoupled_weight_decay=True``, shrinks p by (1 − lr·wd) first (AdamW's rule, the same
    numbers as ``AdamW``). ``maximize`` ascends (the step uses −g). torch's signature; ``foreach``
    (None, False or True), ``capturable`` and ``differentiable`` (False) and ``fused`` (None or
    False) are taken where they leave torch's numbers unchanged on CPU float tensors and refused
    otherwise (module docstring)."""

    _state_names = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False, differentiable=False,
                 fused=None, decoupled_weight_decay=False):
        # betas stay as given here (a tuple when they can be one); _check_hyperparameters says
        # what is wrong with anything that is not a pair
        betas = tuple(betas) if isinstance(betas, (list, tuple)) else betas
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, foreach=foreach, capturable=capturable,
                                      differentiable=differentiable, fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _check_hyperparameters(self, group):
        super()._check_hyperparameters(group)
        owner = type(self).__name__
        betas = group["betas"]
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(map(is_real_number, betas))):
            raise TypeError(f"{owner}: betas must be a pair of numbers in [0, 1), got {betas!r}")
        if not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"{owner}: betas must lie in [0, 1), got {betas!r}")
        check_real_number(group["eps"], f"{owner}: invalid eps", "eps", minimum=0.0)

    def _check_state_entry(self, entry, where):
        required = {"step", "exp_avg", "exp_avg_sq"}
        if entry and not required <= set(entry):
            raise ValueError(f"{where}: {type(self).__name__} state needs {sorted(required)}, got {sorted(entry)}")

    def _step(self) -> None:
        for index, group in enumerate(self.param_groups):
            flat = self._flat_state(index, group)
            if flat is None:  # parameters not in one flat buffer, or their step counts differ
                for parameter in group["params"]:
                    self._update(parameter, group, self.state.setdefault(id(parameter), {}))
                continue
            data, grad, buffers, states = flat
            for state in states:
                state["step"] += 1.0
            self._kernel(group, states[0]["step"], data, grad, *buffers)

    def _update(self, parameter, group, state):
        if not state:
            state.update(self._initial_state(parameter.data, group))
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = np.zeros_like(parameter.data)
        state["step"] += 1.0
        buffers = [state[name].reshape(-1) for name in self._buffer_names(group)]
        self._kernel(group, state["step"], parameter.data.reshape(-1), parameter.grad.reshape(-1), *buffers)

    @staticmethod
    def _buffer_names(group) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if group["amsgrad"] else ("exp_avg", "exp_avg_sq")

    def _initial_state(self, data, group) -> dict:
        return {"step": 0.0, **{name: np.zeros_like(data) for name in self._buffer_names(group)}}

    def _kernel(self, group, step, data, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None):
        """One Adam step on flat arrays."""
        kernels.adam_step(data, grad, exp_avg, exp_avg_sq, exp_avg_sq if max_exp_avg_sq is None else max_exp_avg_sq,
                          *adam_scalars(group, step, data.dtype))

    def _flat_state(self, index, group):
        """``(data, grad, state buffers, per-parameter states)``, each a flat array over the whole
        group, when the group's parameters are consecutive views of one buffer
        (``Module.flatten_parameters``) and their states agree in step count; else None.

        The per-parameter state entries are then views of the flat state buffers, so
        ``state_dict`` and ``load_state_dict`` see torch's layout unchanged. The layout is worked
        out once and re-checked on every step by the identity of the arrays it was built from,
        so rebinding a parameter's ``.data`` or loading a state falls back or rebuilds correctly.
        """
        params = group["params"]
        names = self._buffer_names(group)
        states = [self.state.setdefault(id(p), {}) for p in params]

        def arrays_now() -> list:
            return [a for p in params for a in (p.data, p.grad)] + [s.get(n) for s in states for n in names]

        arrays = arrays_now()
        cached = self._flat_cache.get(index)
        if cached is not None and len(cached[0]) == len(arrays) and all(a is b for a, b in zip(cached[0], arrays)):
            return cached[1]
        layout = flat_layout(params)
        result = None
        if layout is not None:
            data, grad = layout
            empty = [not state for state in states]
            if all(empty):
                for state in states:
                    state["step"] = 0.0
            steps = {state.get("step") for state in states}
            if len(steps) == 1 and all(all(name in state for name in names) or not state.keys() - {"step"}
                                       for state in states):
                buffers = []
                for name in names:
                    flat = np.zeros_like(data)
                    start = 0
                    for parameter, state in zip(params, states):
                        view = flat[start:start + parameter.size].reshape(parameter.shape)
                        if name in state:
                            np.copyto(view, state[name])
                        state[name] = view
                        start += parameter.size
                    buffers.append(flat)
                result = (data, grad, buffers, states)
        self._flat_cache[index] = (arrays_now(), result)  # the state entries may be new views now
        return result


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p ← p(1 - lr·wd) before the step.

    torch's AdamW: ``Adam`` with ``decoupled_weight_decay=True`` (which it does not take as an
    argument) and a default weight decay of 1e-2. A group may still set the flag, as in torch;
    a loaded state gets it back, as torch's ``AdamW.__setstate__`` does.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False, differentiable=False,
                 fused=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused, decoupled_weight_decay=True)

    def _load_param_groups(self, groups: list, owner: str) -> list:
        loaded = super()._load_param_groups(groups, owner)
        for group in loaded:
            group["decoupled_weight_decay"] = True
        return loaded
