"""The module tree as frozen records (``resnet-trace tree``)."""

from __future__ import annotations

from torch import nn

from resnet_trace.records import TreeNode


def param_count(module: nn.Module) -> int:
    """Parameters under ``module``, each tensor counted once (tied weights too)."""
    return sum(p.numel() for p in module.parameters())


class ParamIndex:
    """Every module's parameters (id -> element count), its own or all under it, each tensor once.

    One memoised walk instead of a ``module.parameters()`` walk per row: the same sets (a
    parameter is identified by its tensor, as ``parameters()`` does), at a fraction of the cost.
    Valid while the model is not changed and for one set of read parameters; build one per trace.
    """

    def __init__(self, read: set[int] | frozenset[int] = frozenset()) -> None:
        self._read = read  # ids of the parameters some operation read (for :meth:`unread`)
        self._under: dict[int, dict[int, int]] = {}
        self._counts: dict[tuple[int, bool], int] = {}
        self._unread: dict[tuple[int, bool], int] = {}

    @staticmethod
    def own(module: nn.Module) -> dict[int, int]:
        return {id(p): p.numel() for p in module.parameters(recurse=False)}

    def under(self, module: nn.Module) -> dict[int, int]:
        """The parameters of ``module`` and everything under it (a loop, not recursion: any depth;
        a module that holds one of its own ancestors adds nothing twice and never loops)."""
        got = self._under.get(id(module))
        if got is not None:
            return got
        open_: set[int] = set()
        todo: list[tuple[nn.Module, bool]] = [(module, False)]
        while todo:
            m, children_done = todo.pop()
            if id(m) in self._under:
                continue
            if not children_done:
                open_.add(id(m))
                todo.append((m, True))
                todo.extend(
                    (c, False) for c in m.children() if id(c) not in self._under and id(c) not in open_
                )
                continue
            got = self.own(m)
            for child in m.children():
                got.update(self._under.get(id(child), {}))
            self._under[id(m)] = got
            open_.discard(id(m))
        return self._under[id(module)]

    def count(self, module: nn.Module, *, recurse: bool = True) -> int:
        key = (id(module), recurse)
        got = self._counts.get(key)
        if got is None:
            got = self._counts[key] = sum((self.under(module) if recurse else self.own(module)).values())
        return got

    def unread(self, module: nn.Module, *, recurse: bool = True) -> int:
        """Elements of the parameters under ``module`` that are not in ``read``."""
        key = (id(module), recurse)
        got = self._unread.get(key)
        if got is None:
            params = self.under(module) if recurse else self.own(module)
            got = self._unread[key] = sum(n for pid, n in params.items() if pid not in self._read)
        return got


def module_tree(model: nn.Module, ran: set[int]) -> TreeNode:
    """A shared module is expanded once, then shown as an alias of where it was first shown.

    Built with loops, not recursion, so a model of any depth has its tree; a module holding one of
    its own ancestors is shown as an alias there, as any module seen twice.
    """
    index = ParamIndex()
    first: dict[int, str] = {}
    # Pre-order, children in order: (module, name, attr, alias, indices of its children).
    order: list[tuple[nn.Module, str, str, str | None, list[int]]] = []
    todo: list[tuple[nn.Module, str, str, int | None]] = [(model, "", "", None)]
    while todo:
        module, name, attr, parent = todo.pop()
        alias = first.get(id(module))
        if alias is None:
            first[id(module)] = name
        order.append((module, name, attr, alias, []))
        if parent is not None:
            order[parent][4].append(len(order) - 1)
        if alias is None:
            below = [
                (child, f"{name}.{a}" if name else a, a, len(order) - 1)
                for a, child in module.named_children()
            ]
            todo.extend(reversed(below))
    nodes: list[TreeNode | None] = [None] * len(order)
    for i in range(len(order) - 1, -1, -1):  # children come after their parent: build them first
        module, name, attr, alias, kids = order[i]
        nodes[i] = TreeNode(
            name=name,
            attr=attr,
            type=type(module).__name__,
            params=index.count(module),
            own_params=sum(p.numel() for p in module.parameters(recurse=False)),
            ran=id(module) in ran,
            alias_of=alias,
            children=tuple(n for n in (nodes[k] for k in kids) if n is not None),
        )
    root = nodes[0]
    assert root is not None
    return root
