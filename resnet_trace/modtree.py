"""The module tree as frozen records (``resnet-trace tree``)."""

from __future__ import annotations

from torch import nn

from resnet_trace.records import TreeNode


def param_count(module: nn.Module) -> int:
    """Parameters under ``module``, each tensor counted once (tied weights too)."""
    return sum(p.numel() for p in module.parameters())


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
