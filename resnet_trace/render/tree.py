"""``tree``: the module tree, the readable answer to the seed's ``print(model)``."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from rich.tree import Tree

from resnet_trace.records import TreeNode, shape_text


def _label(node: TreeNode) -> Text:
    text = Text(node.attr or node.type)
    text.append(f"  {node.type}", style="cyan")
    if node.alias_of is not None:
        text.append(
            f"  (shared: the same module as {node.alias_of or 'the model'}; counted once)", style="dim"
        )
        return text
    if node.params:
        text.append(f"  {node.params:,} params")
    if node.own_params and not node.ran:
        text.append("  never ran", style="bold red")
    return text


def _add(tree: Tree, node: TreeNode) -> None:
    for child in node.children:
        branch = tree.add(_label(child))
        _add(branch, child)


def never_ran(node: TreeNode) -> list[TreeNode]:
    out = [node] if node.own_params and not node.ran and node.alias_of is None else []
    for child in node.children:
        out.extend(never_ran(child))
    return out


def render_tree(
    root: TreeNode,
    *,
    input_shape: tuple[int, ...] = (1, 3, 224, 224),
    stopped: str | None = None,
    color: bool = False,
    width: int = 160,
) -> str:
    from resnet_trace.render.table import console_text, make_console

    tree = Tree(_label(root))
    _add(tree, root)
    dead = never_ran(root)
    footer = Text(f"total {root.params:,} params")
    shape = shape_text(input_shape)
    if stopped is not None:
        footer.append(f"; the trace of {shape} stopped at {stopped}: modules from there on did not run")
    elif dead:
        footer.append(
            f"; never ran in a trace of {shape}: {', '.join(n.name for n in dead)} "
            f"({sum(n.own_params for n in dead):,} params)"
        )
    console = make_console(color=color, width=width)
    console.print(Group(tree, footer))
    return console_text(console)
