"""``tree``: the module tree, the readable answer to the seed's ``print(model)``."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from rich.tree import Tree

from resnet_trace.printable import visible
from resnet_trace.records import TreeNode, shape_text


def _label(node: TreeNode) -> Text:
    """A module's attribute, type and parameters; names shown by their escapes, never as terminal codes."""
    text = Text(visible(node.attr or node.type))
    text.append(f"  {visible(node.type)}", style="cyan")
    if node.alias_of is not None:
        text.append(
            f"  (shared: the same module as {visible(node.alias_of) or 'the model'}; counted once)",
            style="dim",
        )
        return text
    if node.params:
        text.append(f"  {node.params:,} params")
    if node.own_params and not node.ran:
        text.append("  never ran", style="bold red")
    return text


def _add(tree: Tree, node: TreeNode) -> None:
    """Every module under ``node`` as a branch of ``tree``, in order (a loop: any depth)."""
    todo = [(tree, node)]
    while todo:
        branch, at = todo.pop()
        added = [(branch.add(_label(child)), child) for child in at.children]
        todo.extend(reversed(added))


def never_ran(node: TreeNode) -> list[TreeNode]:
    """The modules holding parameters of their own that never ran, in tree order (a loop: any depth)."""
    out = []
    todo = [node]
    while todo:
        at = todo.pop()
        if at.own_params and not at.ran and at.alias_of is None:
            out.append(at)
        todo.extend(reversed(at.children))
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

    stopped = visible(stopped) if stopped is not None else None
    tree = Tree(_label(root))
    _add(tree, root)
    dead = never_ran(root)
    footer = Text(f"total {root.params:,} params")
    shape = shape_text(input_shape)
    if stopped is not None:
        footer.append(f"; the trace of {shape} stopped at {stopped}: modules from there on did not run")
    elif dead:
        footer.append(
            f"; never ran in a trace of {shape}: {', '.join(visible(n.name) for n in dead)} "
            f"({sum(n.own_params for n in dead):,} params)"
        )
    console = make_console(color=color, width=width)
    console.print(Group(tree, footer))
    return console_text(console)
