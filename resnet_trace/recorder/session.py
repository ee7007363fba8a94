"""The hook lifecycle: ``hook_session(...)`` is the one place hooks live, and the one way to open them.

A session registers the hooks once; each :meth:`HookSession.recording` is one forward with a fresh
:class:`~resnet_trace.recorder.recorder.Recorder`. On the way out of the session every handle is
removed and every submodule's own ``training`` flag restored, whether the forwards succeeded or
raised.

Threads: a session holds its model's lock (:func:`model_lock`) from its first hook to the last
flag restored, so a second thread tracing the same module waits for the first instead of mixing
its calls into the first's recorder (``keep_training_flags`` holds it too: a plain timed forward
cannot flip a traced model's flags). A session's hooks record only the calls of the thread that
opened the recording: a module shared with another model, or run by a thread of the caller's
own, is ignored there. Modules of different models never wait for each other.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from resnet_trace.ops import OpMode
from resnet_trace.recorder.recorder import Recorder
from resnet_trace.recorder.structure import read_structure

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_BY_ID: dict[int, threading.RLock] = {}  # modules that cannot be weak keys (unhashable)
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The one re-entrant lock of ``model``, made on first use and forgotten with the model.

    Held by :func:`hook_session` and :func:`keep_training_flags` for as long as they are open:
    two threads tracing one module take turns, one thread may nest sessions on it.
    """
    with _LOCKS_GUARD:
        try:
            lock = _LOCKS.get(model)
            if lock is None:
                lock = _LOCKS[model] = threading.RLock()
            return lock
        except TypeError:  # a module class that defines __eq__ without __hash__
            key = id(model)
            lock = _LOCKS_BY_ID.get(key)
            if lock is None:
                lock = _LOCKS_BY_ID[key] = threading.RLock()
                try:
                    weakref.finalize(model, _LOCKS_BY_ID.pop, key, None)
                except TypeError:  # pragma: no cover - nn.Module always takes weak references
                    pass
            return lock


@contextlib.contextmanager
def keep_training_flags(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's own ``training`` flag, exactly, on the way out; the model's lock
    (:func:`model_lock`) is held meanwhile, so no other thread's trace flips them in between."""
    with model_lock(model):
        flags = [(m, m.training) for m in model.modules()]
        try:
            yield
        finally:
            for m, flag in flags:
                if m.training is not flag:  # Module.__setattr__ is slow: set only what changed
                    m.training = flag


class HookSession:
    """The hooks of one :func:`hook_session`, for one forward after another.

    Each :meth:`recording` starts a fresh :class:`Recorder` and, for that forward only, the
    operation mode and the saved-tensor hooks (work between forwards, such as making the next
    input or freezing rows, is not the model's). Tracing one model at many input sizes then
    registers its hooks and reads its structure once, not once per size; a forward that changes
    the model (a lazy module, a submodule built in ``forward``) has them read again.

    Opened only by :func:`hook_session`, which removes the hooks and restores the training flags.
    ``model``, ``block_types`` and ``options`` (the recorders' flags: ``stats``, ``events``,
    ``leaf_stats``, ``find_blocks``, ``train``) say what it was opened for.
    """

    def __init__(
        self,
        model: nn.Module,
        block_types: tuple[type[nn.Module], ...],
        *,
        only: set[int] | None,
        ops: bool,
        options: dict[str, bool],
    ) -> None:
        self.model = model
        self.block_types = block_types
        self.only = only
        self.ops = ops
        self.options = options
        self.recorder: Recorder | None = None
        self._thread: int | None = None  # the thread whose calls the recorder takes
        self._handles: list[Any] = []
        self._key: tuple | None = None
        self._names: dict[int, list[str]] = {}
        self._structural: set[int] = set()
        self._params: dict[int, nn.Parameter] = {}
        self.keep_log = False  # each recorder keeps a replay log of its forward (recorder.replay)

    def _read(self) -> tuple[list[tuple[str, nn.Module]], dict[int, nn.Parameter], tuple]:
        pairs = list(self.model.named_modules(remove_duplicate=False))
        params = {id(p): p for p in self.model.parameters()}
        return pairs, params, (tuple((name, id(m)) for name, m in pairs), tuple(params))

    def replay_recorder(self, block_types: tuple[type[nn.Module], ...]) -> Recorder | None:
        """A fresh recorder of ``block_types`` for a replay of this session's last forward (plain
        options only), as a session of them would make for a forward now; None where the model is
        not as when the last forward began (a module or parameter made or replaced in ``forward``)."""
        pairs, params, key = self._read()
        if key != self._key:
            return None
        names, structural = read_structure(self.model, pairs, key[0], block_types)
        return Recorder(self.model, block_types, names=names, structural=structural, params=params)

    def _hook(self) -> None:
        """Register the hooks and read names and parameters, unless the model is as when last read."""
        pairs, params, key = self._read()
        if key == self._key:
            return
        self.remove()
        self._key, self._params = key, params
        self._names, self._structural = read_structure(self.model, pairs, key[0], self.block_types)
        only = self.only
        for module in self.model.modules():
            if only is None or id(module) in only or module is self.model:
                self._handles.append(module.register_forward_pre_hook(self.pre, with_kwargs=True))
                self._handles.append(module.register_forward_hook(self.post, with_kwargs=True))

    def remove(self) -> None:
        """Remove every hook this session registered."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._key = None

    @contextlib.contextmanager
    def recording(self) -> Iterator[Recorder]:
        """A fresh recorder, with the operation modes on, for one forward."""
        self._hook()
        o = self.options
        recorder = Recorder(
            self.model,
            self.block_types,
            stats=o["stats"],
            events=o["events"],
            leaf_stats=o["leaf_stats"],
            find_blocks=o["find_blocks"],
            train=o["train"],
            names=self._names,
            structural=self._structural,
            params=self._params,
        )
        if self.keep_log:
            from resnet_trace.recorder.replay import Log

            recorder.log = Log()
        with contextlib.ExitStack() as stack:
            if self.ops:
                stack.enter_context(_mha_fastpath_off())
                stack.enter_context(OpMode(recorder, shortcuts=True))
            if recorder.train:
                stack.enter_context(torch.autograd.graph.saved_tensors_hooks(recorder.pack, _unpack))
            outer, self.recorder = self.recorder, recorder
            outer_thread, self._thread = self._thread, threading.get_ident()
            try:
                yield recorder
            finally:
                self.recorder, self._thread = outer, outer_thread

    # A module called outside a recording, or by another thread, is not traced. ``kwargs`` may be
    # missing: a hook removed by another thread while a call ran is called without it by torch.
    def pre(self, module: nn.Module, args: tuple, kwargs: dict | None = None) -> None:
        rec = self.recorder
        if rec is not None and self._thread == threading.get_ident():
            rec.pre(module, args, {} if kwargs is None else kwargs)

    def post(self, module: nn.Module, args: tuple, *kwargs_out: Any) -> None:
        rec = self.recorder
        if rec is not None and self._thread == threading.get_ident():
            kwargs, out = kwargs_out if len(kwargs_out) == 2 else ({}, kwargs_out[-1])
            rec.post(module, args, kwargs, out)

    def __deepcopy__(self, memo: dict[int, Any]) -> HookSession:
        """A copy of a module copies its hooks, and with them their session (a fake twin made while
        another thread has the module hooked): the copy is inert, recording nothing."""
        inert = object.__new__(HookSession)
        inert.recorder, inert._thread, inert._handles = None, None, []
        return inert


@contextlib.contextmanager
def hook_session(
    model: nn.Module,
    block_types: tuple[type[nn.Module], ...],
    *,
    stats: bool = False,
    events: bool = False,
    only: set[int] | None = None,
    leaf_stats: bool = False,
    ops: bool = True,
    find_blocks: bool = False,
    train: bool = False,
) -> Iterator[HookSession]:
    """Hook the modules of ``model`` (or just those in ``only``) for as many forwards as the caller
    runs, each inside :meth:`HookSession.recording`, which with ``ops`` also watches its operations.

    Always removes the hooks and restores every ``training`` flag.
    """
    options = dict(stats=stats, events=events, leaf_stats=leaf_stats, find_blocks=find_blocks, train=train)
    session = HookSession(model, block_types, only=only, ops=ops, options=options)
    with model_lock(model), keep_training_flags(model):
        try:
            yield session
        finally:
            session.remove()


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


_MHA_GUARD = threading.Lock()
_mha_users: list[bool] = []  # one entry per recording that holds the fast path off; [0] its old value


@contextlib.contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    """``nn.MultiheadAttention``'s fused CPU fast path hides its products in one kernel: take the plain path.

    The switch is global to the process: the first recording turns it off, the last one out
    (in any thread) restores it, so that one thread's exit never turns it on under another's forward.
    """
    mha = getattr(torch.backends, "mha", None)
    if mha is None:
        yield
        return
    with _MHA_GUARD:
        _mha_users.append(bool(mha.get_fastpath_enabled()) if not _mha_users else _mha_users[0])
        mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        with _MHA_GUARD:
            was = _mha_users.pop()
            if not _mha_users:
                mha.set_fastpath_enabled(was)
