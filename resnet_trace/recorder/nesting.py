"""What a module's input or output may hold for a walk to follow it: bounded nesting, a bounded
number of items, no cycle. Anything else is the model's failure, said in words. No torch."""

from __future__ import annotations

import dataclasses
from typing import Any

#: A module's input or output nested deeper than this (tuples, lists, dicts, dataclasses) is the
#: model's failure: no model needs it, and one that holds itself would never end.
MAX_NESTING = 100
#: ... and so is one holding more items than this, counted along every path (a list holding the
#: same list twice, 60 times over, is 2**60 items to every walk that follows it).
MAX_ITEMS = 1_000_000


class NestingError(ValueError):
    """A module's input or output that no walk can follow: too deep, too many items, or a cycle."""


def _container(value: object) -> bool:
    return isinstance(value, (tuple, list, dict)) or (
        hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type)
    )


def _children(value: Any) -> Any:
    if isinstance(value, dict):
        return value.values()
    if isinstance(value, (tuple, list)):
        return value
    return [getattr(value, f.name, None) for f in dataclasses.fields(value)]


_END = object()


def nesting_problem(value: object) -> str | None:
    """What makes ``value`` unwalkable, in words (``is nested more than 100 levels deep``), or None.

    One iterative walk, each container once (its depth and item count remembered), so it cannot
    itself recurse too deeply or loop: a cycle is found on the path, not followed.
    """
    if not _container(value):
        return None
    depth_of: dict[int, tuple[int, int]] = {}  # finished containers: (levels, items) below them
    on_path = {id(value)}
    stack: list[list[Any]] = [[value, iter(_children(value)), 0, 1]]
    while stack:
        top = stack[-1]
        child = next(top[1], _END)
        if child is _END:
            stack.pop()
            on_path.discard(id(top[0]))
            levels, items = top[2] + 1, top[3]
            depth_of[id(top[0])] = (levels, items)
            if len(stack) + levels > MAX_NESTING:  # a container met again deeper than at first
                return f"is nested more than {MAX_NESTING} levels deep"
            if stack:
                stack[-1][2] = max(stack[-1][2], levels)
                stack[-1][3] += items
                if stack[-1][3] > MAX_ITEMS:
                    return f"holds more than {MAX_ITEMS:,} items"
            continue
        if not _container(child):
            top[3] += 1
            continue
        if id(child) in on_path:
            return "holds itself (a list, tuple or dict inside itself)"
        done = depth_of.get(id(child))
        if done is not None:
            if len(stack) + done[0] > MAX_NESTING:
                return f"is nested more than {MAX_NESTING} levels deep"
            top[2], top[3] = max(top[2], done[0]), top[3] + done[1]
            if top[3] > MAX_ITEMS:
                return f"holds more than {MAX_ITEMS:,} items"
            continue
        if len(stack) >= MAX_NESTING:
            return f"is nested more than {MAX_NESTING} levels deep"
        on_path.add(id(child))
        stack.append([child, iter(_children(child)), 0, 1])
    return None
