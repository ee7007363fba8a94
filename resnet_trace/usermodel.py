"""``--model PATH.py:NAME`` or ``package.module:NAME``: build the user's own model, as asked.

A ``--model PATH/config.json`` (or a folder holding one) is no code: :func:`build_model` hands it
to :mod:`resnet_trace.hfconfig`, which builds the ``transformers`` model it describes, with the
``--model-arg`` pairs replacing its fields; :func:`import_reference` never sees it.

Importing and calling the reference runs the user's code: that is the one input this tool
trusts (docs/security.md). Anything it raises, ``SystemExit`` and ``MemoryError`` included,
becomes one line naming the reference (exit 2).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_trace.errors import UsageError, message_of
from resnet_trace.ops import is_fake
from resnet_trace.records import Device

#: The modules holding the user's code, by name (``--model``'s file or package): a failure raised
#: from one of them, wherever our code called it, is the model's (``cli.errors.model_failure``).
USER_MODULES: set[str] = set()


def _prepend_path(folder: str) -> None:
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _failed(ref: str, what: str, exc: BaseException) -> UsageError:
    detail = message_of(exc)  # even when the exception's own __str__ raises
    if isinstance(exc, SystemExit):
        detail = f"it called sys.exit({exc.code!r})"
    return UsageError(f"--model {ref!r}: {what} failed in your code: {type(exc).__name__}: {detail}"[:400])


def import_reference(ref: str) -> Callable[..., Any]:
    """The class or factory that ``ref`` names. Importing it runs its module's code."""
    from resnet_trace.hfconfig import is_config_ref

    if is_config_ref(ref):
        raise UsageError(f"--model {ref!r} is a config, not Python: it is built, never imported")
    source, sep, name = ref.rpartition(":")
    if not sep or not source or not name:
        raise UsageError(f"--model {ref!r}: expected PATH.py:NAME or package.module:NAME")
    try:
        if source.endswith(".py") or "/" in source or "\\" in source:
            path = Path(source)
            if not path.is_file():
                raise UsageError(f"--model {ref!r}: {source!r} does not exist")
            # Like ``python file.py``: the file's folder comes first, so its neighbours import.
            _prepend_path(str(path.resolve().parent))
            mod_name = f"_resnet_trace_user_{abs(hash(str(path.resolve())))}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise UsageError(f"--model {ref!r}: {source!r} cannot be imported as Python")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            USER_MODULES.add(mod_name)
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(mod_name, None)
                raise
        else:
            _prepend_path(os.getcwd())  # like ``python -m``: the current folder is importable
            if source.split(".")[0] not in ("resnet_trace", "torch"):  # ours are never the model's
                USER_MODULES.add(source)
            module = importlib.import_module(source)
    except (UsageError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # SystemExit and MemoryError too: the user's code, one line
        raise _failed(ref, f"importing {source!r}", exc) from None
    obj = getattr(module, name, None)
    if obj is None:
        raise UsageError(f"--model {ref!r}: {source!r} has no {name!r}")
    if not callable(obj):
        raise UsageError(f"--model {ref!r}: {name!r} is not a class or a function")
    return obj


def parse_model_args(values: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, each value a Python literal (``3``, ``'x'``, ``[1, 2]``) or else a string."""
    out: dict[str, Any] = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--model-arg {item!r}: expected KEY=VALUE with KEY a Python name")
        try:
            out[key] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            out[key] = raw.strip()
    return out


def build(factory: Callable[..., Any], ref: str, kwargs: dict[str, Any]) -> nn.Module:
    """Call the factory with exactly the arguments the user gave; name what is missing or unknown."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = None
    if params is not None:
        listed = ", ".join(
            f"{p.name}" + ("" if p.default is inspect.Parameter.empty else f"={p.default!r}")
            for p in params.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        unknown = [k for k in kwargs if k not in params and not takes_any]
        if unknown:
            raise UsageError(
                f"--model {ref!r} takes no argument {unknown[0]!r} (its parameters: {listed or 'none'})"
            )
        missing = [
            p.name
            for p in params.values()
            if p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in kwargs
        ]
        if missing:
            raise UsageError(
                f"--model {ref!r} needs {', '.join(repr(m) for m in missing)}: pass "
                f"--model-arg {missing[0]}=VALUE (its parameters: {listed})"
            )
    try:
        model = factory(**kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise _failed(ref, "building the model", exc) from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model {ref!r} returned a {type(model).__name__}, not a torch.nn.Module")
    refuse_lazy(model, f"--model {ref!r}")
    return model


def refuse_lazy(model: nn.Module, what: str) -> None:
    """Refuse, in one line, a model whose parameters are made by its first forward (``nn.LazyLinear``
    and the other lazy modules): every count this tool reports would be of parameters that do not
    exist yet."""
    from torch.nn.parameter import is_lazy

    for name, module in model.named_modules():
        own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if any(is_lazy(t) for t in own):
            message = (
                f"{what}: {type(module).__name__} {name or 'the model'!r} is a lazy module (its parameters "
                "are made by its first forward); give it its sizes (nn.Linear instead of nn.LazyLinear), "
                "or run one forward in your factory before returning the model"
            )
            raise UsageError(message[:500])


def build_model(
    ref: str,
    kwargs: dict[str, Any],
    *,
    device: str = Device.META,
    init_seed: int | None = None,
) -> nn.Module:
    """Import the user's model and build it with exactly ``kwargs``: on ``meta`` (initialised as
    written: its init functions check their arguments) or, under ``init_seed``, on ``device``.

    A config reference (:func:`resnet_trace.hfconfig.is_config_ref`) is built from the file, with
    ``kwargs`` replacing its fields (``--model-arg num_hidden_layers=2``); nothing is imported."""
    from resnet_trace.hfconfig import build_from_config, is_config_ref

    if is_config_ref(ref):
        return build_from_config(ref, device=device, init_seed=init_seed, overrides=kwargs)
    factory = import_reference(ref)
    if device == Device.META:
        with torch.device("meta"):
            return build(factory, ref, kwargs)
    if init_seed is not None:
        torch.manual_seed(init_seed)
    model = build(factory, ref, kwargs)
    # inside a FakeTensorMode (a shape-only build) the tensors are fake already: nothing to move
    return model if is_fake(next(iter(model.parameters()), None)) else model.to(device)
