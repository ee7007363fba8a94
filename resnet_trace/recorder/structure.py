"""A model's module names (a shared module has several) and the modules holding a block, cached per model."""

from __future__ import annotations

import weakref

from torch import nn

_STRUCTURE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[int, list[str]], set[int]]] = (
    weakref.WeakKeyDictionary()
)


def read_structure(
    model: nn.Module,
    pairs: list[tuple[str, nn.Module]],
    tree: tuple[tuple[str, int], ...],
    block_types: tuple[type[nn.Module], ...],
) -> tuple[dict[int, list[str]], set[int]]:
    """Every module's names (a shared module has several) and the modules holding a block.

    ``pairs``: ``model.named_modules(remove_duplicate=False)``, ``tree`` their names and ids (the
    caller has both). Computed once per model and block classes (each ``run --repeat`` pass and
    ``--train`` step opens a session of its own); recomputed when the module tree changed.
    """
    key = (block_types, tree)
    cached = _STRUCTURE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    names: dict[int, list[str]] = {}
    by_name: dict[str, nn.Module] = {}
    for name, module in pairs:
        names.setdefault(id(module), []).append(name)
        by_name[name] = module
    structural: set[int] = set()
    for name, module in pairs:
        if block_types and isinstance(module, block_types):
            parts = name.split(".") if name else []
            for i in range(len(parts)):
                holder = by_name.get(".".join(parts[:i]))
                if holder is not None and holder is not module:
                    structural.add(id(holder))
    _STRUCTURE[model] = (key, names, structural)
    return names, structural
