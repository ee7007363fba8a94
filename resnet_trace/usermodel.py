"""``--model PATH.py:NAME`` or ``package.module:NAME``: trace the user's own copy of the seed."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path

import torch
from torch import nn

from resnet_trace.errors import UsageError
from resnet_trace.records import ModelInfo
from resnet_trace.spec import ModelSpec
from resnet_trace.tracer import Target


def _prepend_path(folder: str) -> None:
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _import(ref: str) -> object:
    source, sep, name = ref.rpartition(":")
    if not sep or not source or not name:
        raise UsageError(f"--model {ref!r}: expected PATH.py:NAME or package.module:NAME")
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
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # the user's file failed: report it, do not crash
            sys.modules.pop(mod_name, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise UsageError(
                f"--model {ref!r}: importing {source!r} failed: {type(exc).__name__}: {exc}"
            ) from None
    else:
        _prepend_path(os.getcwd())  # like ``python -m``: the current folder is importable
        try:
            module = importlib.import_module(source)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise UsageError(
                f"--model {ref!r}: importing {source!r} failed: {type(exc).__name__}: {exc}"
            ) from None
    obj = getattr(module, name, None)
    if obj is None:
        raise UsageError(f"--model {ref!r}: {source!r} has no {name!r}")
    if not callable(obj):
        raise UsageError(f"--model {ref!r}: {name!r} is not a class or a function")
    return obj


def _call(factory: object, spec: ModelSpec, ref: str) -> nn.Module:
    try:
        params = inspect.signature(factory).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        params = {}
    kwargs = {}
    for key, value in (("base_dim", spec.base_dim), ("num_classes", spec.num_classes)):
        if key in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kwargs[key] = value
    try:
        model = factory(**kwargs)  # type: ignore[operator]
    except Exception as exc:
        raise UsageError(f"--model {ref!r}: calling it failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model {ref!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_user_target(
    ref: str,
    spec: ModelSpec,
    *,
    block: str = "BottleNeck",
    skip: tuple[str, ...] = ("downsample", "dim_equalizer"),
    device: str = "meta",
    init_seed: int | None = None,
) -> Target:
    """Import the user's model and find its blocks. Importing runs the file's code."""
    factory = _import(ref)
    if device == "meta":
        with torch.device("meta"):
            model = _call(factory, spec, ref)
    else:
        if init_seed is not None:
            torch.manual_seed(init_seed)
        model = _call(factory, spec, ref).to(device)
    block_types = {type(m) for m in model.modules() if type(m).__name__ == block}
    if not block_types:
        raise UsageError(f"--model {ref!r} has no module of class {block!r} (set --block)")
    block_type = next(iter(block_types))
    info = ModelInfo(
        base_dim=spec.base_dim,
        num_classes=spec.num_classes,
        variant="custom",
        head="custom",
        source=ref,
        block=block,
        skip=skip,
    )
    return Target(model=model, info=info, block_type=block_type, skip_names=skip)
