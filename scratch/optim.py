"""SGD, Adam and AdamW with torch.optim's exact update rules, as Numba kernels.

Derivations: docs/optim.md. Each optimizer updates ``Parameter.data`` in place from
``Parameter.grad``; like torch, ``params`` may be an iterable of Parameters or of dicts
(parameter groups with their own hyper-parameters). ``state_dict()`` mirrors torch's layout:
``{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}``.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from scratch._validate import as_numpy_array
from scratch.kernels import optim as kernels
from scratch.nn.module import Parameter, flat_layout


class Optimizer:
    """Parameter groups, hyper-parameter checks, zero_grad and torch-shaped state_dict."""

    defaults: dict = {}

    def __init__(self, params, defaults: dict):
        owner = type(self).__name__
        if isinstance(params, Parameter):
            raise TypeError(f"{owner}: params must be an iterable of Parameters, got a single Parameter")
        params = list(params)
        if not params:
            raise ValueError(f"{owner}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups: list[dict] = []
        seen: set[int] = set()
        for group in groups:
            if not isinstance(group, dict) or "params" not in group:
                raise TypeError(f"{owner}: parameter groups must be dicts with a 'params' entry")
            unknown = set(group) - set(defaults) - {"params"}
            if unknown:
                raise ValueError(f"{owner}: unknown hyper-parameters {sorted(unknown)}")
            group = {**defaults, **group, "params": list(group["params"])}
            for parameter in group["params"]:
                if not isinstance(parameter, Parameter):
                    raise TypeError(f"{owner}: expected scratch Parameters, got {type(parameter).__name__}")
                if id(parameter) in seen:
                    raise ValueError(f"{owner}: a parameter appears in more than one group")
                if not parameter.data.flags.c_contiguous:
                    raise ValueError(f"{owner}: parameter data must be C-contiguous")
                seen.add(id(parameter))
            self._check_hyperparameters(group)
            self.param_groups.append(group)
        self.state: dict[int, dict] = {}  # keyed by id(parameter)
        self._flat_cache: dict[int, tuple] = {}  # group index -> (arrays it was built from, layout)

    def _check_hyperparameters(self, group: dict) -> None:
        owner = type(self).__name__
        if not group["lr"] >= 0:
            raise ValueError(f"{owner}: invalid learning rate {group['lr']!r}")
        if not group.get("weight_decay", 0.0) >= 0:
            raise ValueError(f"{owner}: invalid weight_decay {group['weight_decay']!r}")

    def zero_grad(self) -> None:
        """Fill every gradient with zeros in place."""
        for group in self.param_groups:
            for parameter in group["params"]:
                parameter.zero_grad()

    def step(self) -> None:
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
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(f"{owner}: expected a dict with exactly 'state' and 'param_groups'")
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{owner}: {len(groups)} parameter groups saved, optimizer has {len(self.param_groups)}")
        for saved, own in zip(groups, self.param_groups):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(f"{owner}: a saved group has {len(saved['params'])} parameters, "
                                 f"the optimizer's has {len(own['params'])}")
        index_to_param = {}
        for saved, own in zip(groups, self.param_groups):
            for saved_index, parameter in zip(saved["params"], own["params"]):
                index_to_param[saved_index] = parameter
        new_state = {}
        for key, entries in state_dict["state"].items():
            key = int(key)
            if key not in index_to_param:
                raise ValueError(f"{owner}: state for unknown parameter index {key}")
            parameter = index_to_param[key]
            converted = {}
            for name, value in entries.items():
                if name == "step":
                    converted[name] = float(as_numpy_array(value, owner) if not isinstance(value, (int, float)) else value)
                    continue
                if value is None:
                    continue
                array = as_numpy_array(value, f"{owner}[{key}][{name!r}]")
                if array.shape != parameter.shape:
                    raise ValueError(f"{owner}: state {key}/{name!r} has shape {array.shape}, "
                                     f"its parameter has {parameter.shape}")
                converted[name] = np.array(array, dtype=parameter.dtype, order="C")
            self._check_state_entry(converted, f"{owner}[{key}]")
            new_state[id(parameter)] = converted
        new_groups = []
        for saved, own in zip(groups, self.param_groups):
            # Only the hyper-parameters this optimizer knows; torch adds flags such as "foreach".
            group = {**own, **{k: saved[k] for k in own if k != "params" and k in saved}}
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
            self._check_hyperparameters(group)
            new_groups.append(group)
        self.param_groups = new_groups
        self.state = new_state
        self._flat_cache = {}

    def _check_state_entry(self, entry: dict, where: str) -> None:
        pass

    def __repr__(self) -> str:
        settings = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return f"{type(self).__name__}({settings})"


class SGD(Optimizer):
    """Stochastic gradient descent with torch's momentum, dampening, Nesterov and weight decay."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _check_hyperparameters(self, group):
        super()._check_hyperparameters(group)
        if not group["momentum"] >= 0:
            raise ValueError(f"SGD: invalid momentum {group['momentum']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")

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


def adam_scalars(group: dict, step: float, dtype, decoupled: bool) -> tuple:
    """``adam_step``'s scalar arguments for a parameter group at step ``step`` (1, 2, ...).

    The bias corrections and step size are computed in Python float64 from the step count, as
    torch does; then each is cast to ``dtype``, as each torch op casts its Python scalar.
    """
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
    """Adam (Kingma & Ba) as torch.optim.Adam: ``weight_decay`` adds wd·p to the gradient."""

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _check_hyperparameters(self, group):
        super()._check_hyperparameters(group)
        owner = type(self).__name__
        beta1, beta2 = group["betas"]
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"{owner}: betas must lie in [0, 1), got {group['betas']!r}")
        if not group["eps"] >= 0:
            raise ValueError(f"{owner}: invalid eps {group['eps']!r}")

    def _check_state_entry(self, entry, where):
        required = {"step", "exp_avg", "exp_avg_sq"}
        if entry and not required <= set(entry):
            raise ValueError(f"{where}: Adam state needs {sorted(required)}, got {sorted(entry)}")

    def step(self) -> None:
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
                          *adam_scalars(group, step, data.dtype, self._decoupled))

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
    """Adam with decoupled weight decay (Loshchilov & Hutter): p ← p(1 - lr·wd) before the step."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)
