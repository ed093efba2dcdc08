"""In-place edits between forward and backward: caught at backward, as torch catches them.

torch counts the writes to every tensor (its version counter) and refuses a backward whose saved
tensors were written to after the forward ("one of the variables needed for gradient computation
has been modified by an inplace operation"). A NumPy array has no such counter. So a scratch
layer *watches* each array it keeps for its backward that its caller can reach (its input, its
returned output, or a view of either): at forward it takes a 64-bit fingerprint of every byte of
the array (``fingerprint``, the Numba kernel ``scratch.kernels.fingerprint``); its backward hashes
the array again and, when the two differ, raises ``InplaceModificationError`` naming the layer
and the array, before it computes or accumulates anything. Losses do the same for their input
and target (GaussianKL: mean and logvar), and the VAEs for the noise ε they were given.

**Containers vouch for their insides.** Hashing costs about a memory copy, so nothing is hashed
that the caller cannot reach. An array made inside a container's pass that neither is nor views
one of the pass's arguments or returned arrays (the activations between the layers of a
``Sequential``, everything between a model's input and its loss) can only be reached through
private attributes, so it needs no fingerprint. The mechanism:

- The outermost container opens a ``Pass`` over its arguments (``Sequential.forward``; a model's
  ``loss``/``forward``, decorated with ``forward_pass``). Layers that run inside it hand the
  arrays they keep to the pass instead of hashing them. When the pass returns, it watches only
  those that may share memory with an argument or a returned array (``numpy.may_share_memory``,
  a bounds test: conservative), hashing each distinct buffer once; the others get no ``Watch``
  and are never checked. A pass that fails part-way watches what may share memory with its
  arguments. Inner containers join the outer pass. A layer called on its own is its own pass.
- A container only vouches for children that keep no array where the caller could reach it
  other than through their return value (``Module._KEEPS_ARRAYS_PRIVATE``: the library's layers
  and containers). A user-defined Module, which might store an intermediate array in an
  attribute, runs ``outside_pass``: the layers inside it fingerprint at their own boundaries.
- At backward, the outermost container checks every watch its children hold before any child
  runs (``Verified``; a model's ``backward`` is decorated with ``backward_pass``), each distinct
  buffer once, so that a refusal leaves every ``.grad`` and cache as it was; the children's own
  checks (``check``, in each layer's backward) then skip what it has verified.

So a model's training step hashes its batch twice (once at ``loss``, once at ``backward``) and
nothing else; measured cost in docs/inplace.md. Parameters are not watched (an optimizer step
between forward and backward is not detected), nor anything outside the arrays named above.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from scratch.kernels.fingerprint import buffer_address, fingerprint_bytes

#: False turns the detection off: nothing is watched, hashed or checked. For measuring its cost
#: (docs/inplace.md) and nothing else: the error it raises means a gradient would be wrong.
ENABLED = True


class InplaceModificationError(RuntimeError):
    """An array a backward pass needs was modified in place after the forward pass that kept it."""


def fingerprint(array: np.ndarray) -> int:
    """64-bit hash of every byte of ``array``, in C order (``scratch.kernels.fingerprint``)."""
    data = array if array.flags.c_contiguous else np.ascontiguousarray(array)
    return int(fingerprint_bytes(data.reshape(-1).view(np.uint8)))


class Watch:
    """One array a forward pass kept for its backward that its caller can reach, and the
    fingerprint of its bytes then (``digest``).

    ``owner`` (the layer, loss or model) and ``what`` ("input", "output", "target", ...) word
    the error; ``key`` names the buffer, so that watches of the same bytes are hashed once.
    """

    __slots__ = ("owner", "what", "array", "digest", "key")

    def __init__(self, owner, what: str, array: np.ndarray):
        self.owner, self.what, self.array = owner, what, array
        self.digest = self.key = None


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.open_pass = None  # the outermost Pass in progress on this thread
        self.verified: set[int] = set()  # ids of the watches an enclosing backward has checked


_state = _ThreadState()


def _arrays(value) -> list[np.ndarray]:
    """The arrays in an argument or a return value (through tuples, lists and dict values)."""
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (tuple, list)):
        return [array for item in value for array in _arrays(item)]
    if isinstance(value, dict):
        return _arrays(list(value.values()))
    return []


def _key(array: np.ndarray) -> tuple:
    """The buffer ``array`` views: equal keys, equal bytes (so one hash serves both)."""
    address = buffer_address(array)
    if array.flags.c_contiguous:
        return address, array.nbytes
    return address, array.shape, array.strides, array.itemsize


def _owner_of_memory(array: np.ndarray):
    """The object owning ``array``'s memory (NumPy points every view's ``base`` at it)."""
    return array if array.base is None else array.base


def _reachable(owner, watched, boundary: list[np.ndarray], roots: list) -> tuple[Watch, ...]:
    """Watches of the ``(what, array)`` pairs whose array may share memory with ``boundary``
    (``roots``: each one's ``_owner_of_memory``). A view of the same owner counts as reachable
    without asking NumPy (conservative: at worst a needless hash)."""
    found = []
    for what, array in watched:
        root = _owner_of_memory(array)
        for reachable, reachable_root in zip(boundary, roots):
            if root is reachable_root or np.may_share_memory(array, reachable):
                found.append(Watch(owner, what, array))
                break
    return tuple(found)


def _fingerprint_all(watches) -> None:
    """Give each watch its digest, hashing each distinct buffer once."""
    if len(watches) == 1:  # a layer called on its own: no other watch to share a hash with
        watch = watches[0]
        watch.key, watch.digest = ("alone", id(watch)), fingerprint(watch.array)
        return
    digests: dict[tuple, int] = {}
    for watch in watches:
        key = _key(watch.array)
        digest = digests.get(key)
        if digest is None:
            digest = digests[key] = fingerprint(watch.array)
        watch.key, watch.digest = key, digest


class _Deferred(tuple):
    """What a holder's ``_watches`` is while the pass it ran in is still open: empty (nothing to
    check yet) and unique, so that the pass attaches the watches only if the holder still holds
    this forward's cache when it ends (it may have run again, or been restored after a failure)."""

    __slots__ = ()


class Pass:
    """``with Pass(*arguments) as forward: ...; forward.returns(result)``: one container pass.

    The outermost ``Pass`` on a thread collects what every layer that runs inside it keeps and,
    on leaving, gives each layer a ``Watch`` (with its fingerprint) of the kept arrays that may
    share memory with ``arguments`` or with the arrays in ``result`` (only ``arguments`` when the
    pass raised), and none of the others. A ``Pass`` opened inside another does nothing: the
    outer one sees the true boundary.
    """

    __slots__ = ("arguments", "returned", "pending", "outermost", "found")

    def __init__(self, *arguments):
        self.arguments, self.returned, self.pending, self.outermost = arguments, (), [], False
        self.found = None  # once an outermost pass has ended: every Watch it made

    def __enter__(self) -> "Pass":
        if _state.open_pass is None:
            _state.open_pass, self.outermost = self, True
        return self

    def returns(self, result) -> None:
        self.returned = result

    def __exit__(self, kind, error, traceback) -> bool:
        if self.outermost:
            _state.open_pass = None
            boundary = _arrays(self.arguments)
            if kind is None:
                boundary += _arrays(self.returned)
            roots = [_owner_of_memory(array) for array in boundary]
            found = []
            for owner, deferred, watched in self.pending:
                if owner._watches is deferred:
                    watches = _reachable(owner, watched, boundary, roots) if boundary else ()
                    object.__setattr__(owner, "_watches", watches)
                    found.extend(watches)
            if found:
                _fingerprint_all(found)
            self.found = tuple(found)
        return False


class outside_pass:
    """``with outside_pass(): child(x)``: run a child the container cannot vouch for with no pass
    open, so that the layers inside it fingerprint at their own boundaries."""

    __slots__ = ("saved",)

    def __enter__(self) -> None:
        self.saved, _state.open_pass = _state.open_pass, None

    def __exit__(self, kind, error, traceback) -> bool:
        _state.open_pass = self.saved
        return False


def watch(owner, watched, arguments, returned=()) -> tuple[Watch, ...]:
    """What ``owner`` must store as its ``_watches`` for ``watched``: the ``(what, array)`` pairs
    its forward keeps for its backward that may view what its caller holds.

    Outside a ``Pass``, ``owner`` was called on its own: a fingerprinted ``Watch`` of each array
    that may share memory with ``arguments`` or ``returned`` (an array or a tuple of them).
    Inside one, an empty placeholder; the pass replaces it when it ends.
    """
    if not ENABLED:
        return ()
    current = _state.open_pass
    if current is not None:
        deferred = _Deferred()
        current.pending.append((owner, deferred, watched))
        return deferred
    boundary = _arrays(arguments) + _arrays(returned)
    watches = _reachable(owner, watched, boundary, [_owner_of_memory(array) for array in boundary])
    if watches:
        _fingerprint_all(watches)
    return watches


def before_write(x: np.ndarray) -> None:
    """Fingerprint now what the open pass would fingerprint at its end, for every layer of it
    that keeps an array ``x`` may share memory with: a layer is about to overwrite ``x`` in place
    (``inplace=True``), and that layer's backward must see the change (``scratch.nn.layers``)."""
    current = _state.open_pass if ENABLED else None
    if current is None:
        return
    for holder, placeholder, watched in current.pending:
        if holder._watches is not placeholder or not any(np.may_share_memory(a, x) for _, a in watched):
            continue
        watches = tuple(Watch(holder, what, array) for what, array in watched)
        _fingerprint_all(watches)
        object.__setattr__(holder, "_watches", watches)


def _message(where: str, watch: Watch, root, child_word: str) -> str:
    subject = f"its {watch.what}"
    if root is not None and watch.owner is not root:
        owner = f"{type(watch.owner).__name__}"
        for name, module in root.named_modules():
            if module is watch.owner:
                owner = f"{child_word}{name} ({owner})"
                break
        else:
            for name, value in vars(root).items():
                if value is watch.owner:
                    owner = f"{name} ({owner})"
                    break
        subject = f"{owner}'s {watch.what}"
    return (f"{where}: {subject} was modified in place after forward (the gradient would be wrong; "
            f"torch raises here too); pass a copy, or run forward again")


def check(where: str, watches, root=None, child_word: str = "") -> None:
    """Raise ``InplaceModificationError`` if the array of any of ``watches`` changed since its
    fingerprint; each buffer is hashed once, and watches an enclosing backward has verified are
    skipped. ``where`` ("Linear.backward") starts the message; ``root``, when given, is the
    container whose descendant's array it names ("child 2 (ReLU)'s output")."""
    if not watches:
        return
    verified = _state.verified
    hashes: dict[tuple, int] = {}
    for watch in watches:
        if id(watch) in verified:
            continue
        digest = hashes.get(watch.key)
        if digest is None:
            digest = hashes[watch.key] = fingerprint(watch.array)
        if digest != watch.digest:
            raise InplaceModificationError(_message(where, watch, root, child_word))


class Verified:
    """``with Verified(where, watches, root): ...``: ``check`` the watches once, before the body,
    then let every ``check`` inside the body skip them (a container's backward, whose children
    check themselves again)."""

    __slots__ = ("where", "watches", "root", "child_word", "added")

    def __init__(self, where: str, watches, root=None, child_word: str = ""):
        self.where, self.watches, self.root, self.child_word, self.added = where, watches, root, child_word, ()

    def __enter__(self) -> None:
        if self.watches:
            check(self.where, self.watches, self.root, self.child_word)
            verified = _state.verified
            self.added = [id(w) for w in self.watches if id(w) not in verified]
            verified.update(self.added)

    def __exit__(self, kind, error, traceback) -> bool:
        if self.added:
            _state.verified.difference_update(self.added)
        return False


def held_watches(root) -> list[Watch]:
    """The watches held by ``root``'s caching layers, by the losses among its attributes and by
    ``root`` itself (a model's own, e.g. the VAE's ε)."""
    found = []
    for module in root._caching_modules():
        found.extend(getattr(module, "_watches", None) or ())
    for value in vars(root).values():
        if not hasattr(value, "_caching_modules") and isinstance(getattr(value, "_watches", None), tuple):
            found.extend(value._watches)
    found.extend(vars(root).get("_watches") or ())
    return found


def forward_pass(method):
    """Decorator for a model's ``loss``/``forward``/...: the call is one ``Pass`` over its
    arguments and what it returns; what the layers keep in between is private to it and not
    hashed. The watches the pass made are recorded on the model (``_pass_watches``) for
    ``backward_pass``; None when the call ran inside another pass or failed."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        if not ENABLED:
            return method(self, *args, **kwargs)
        object.__setattr__(self, "_pass_watches", None)
        with Pass(args, kwargs) as current:
            result = method(self, *args, **kwargs)
            current.returns(result)
        object.__setattr__(self, "_pass_watches", current.found)
        return result

    return run


def backward_pass(method):
    """Decorator for a model's ``backward``: the watches its last pass made (or, failing a record,
    every watch its layers, losses and itself hold: ``held_watches``) are verified before the
    body runs, once per buffer, so that a refusal changes nothing, and not hashed again inside.
    (The body refuses caches that are not those of the last pass: ``check_backward_ready``.)"""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        if not ENABLED:
            return method(self, *args, **kwargs)
        watches = vars(self).get("_pass_watches")
        with Verified(f"{type(self).__name__}.backward", held_watches(self) if watches is None else watches, self):
            return method(self, *args, **kwargs)

    return run
