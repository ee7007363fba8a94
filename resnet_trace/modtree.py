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
        got = self._under.get(id(module))
        if got is None:
            got = self.own(module)
            for child in module.children():
                got.update(self.under(child))
            self._under[id(module)] = got
        return got

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
    """A shared module is expanded once, then shown as an alias of where it was first shown."""
    first: dict[int, str] = {}

    def node(module: nn.Module, name: str, attr: str) -> TreeNode:
        alias = first.get(id(module))
        if alias is None:
            first[id(module)] = name
        children = (
            ()
            if alias is not None
            else tuple(node(child, f"{name}.{a}" if name else a, a) for a, child in module.named_children())
        )
        return TreeNode(
            name=name,
            attr=attr,
            type=type(module).__name__,
            params=param_count(module),
            own_params=sum(p.numel() for p in module.parameters(recurse=False)),
            ran=id(module) in ran,
            alias_of=alias,
            children=children,
        )

    return node(model, "", "")
