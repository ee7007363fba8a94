"""``graph``: the block chain as Mermaid or Graphviz DOT text, each skip path its own edge.

Each block is two nodes: its body (the 1x1 -> 3x3 -> 1x1 chain) and the ``+`` where the
skip path joins it. The skip edge runs from the block's input straight to its ``+``,
labelled with the skip module that ran (``downsample 1x1/2``, ``dim_equalizer 1x1``)
or ``identity``. Stages are subgraphs; edges carry the shapes that flow along them.
"""

from __future__ import annotations

from resnet_trace.printable import visible
from resnet_trace.records import Depth, GraphFormat, Kind, Row, Shape, Trace, shape_text


def skip_label(trace: Trace, block: Row) -> str:
    """``downsample 1x1/2``: the skip module's name and geometry, from the layer rows."""
    skip = block.skip or "identity"
    if skip == "identity":
        return "identity"
    for row in trace.rows:
        if row.depth is Depth.LAYER and row.name == f"{block.name}.{skip}" and row.conv is not None:
            kh, kw = row.conv.kernel
            stride = row.conv.stride[0]
            return f"{skip} {kh}x{kw}" + (f"/{stride}" if stride != 1 else "")
    return skip


def _body_label(trace: Trace, block: Row) -> str:
    convs = [
        r
        for r in trace.rows
        if r.depth is Depth.LAYER
        and r.parent == block.name
        and r.conv is not None
        and not r.name.startswith(f"{block.name}.{block.skip}")
    ]
    parts = [
        f"{r.conv.kernel[0]}x{r.conv.kernel[1]}" + (f"/{r.conv.stride[0]}" if r.conv.stride[0] != 1 else "")
        for r in convs
        if r.conv
    ]
    return " → ".join(parts)


def _chain(trace: Trace) -> list[Row]:
    return [r for r in trace.rows if r.depth is not Depth.LAYER and r.kind is not Kind.STAGE]


class _Ids:
    """A Mermaid node id per name: ``n_`` and the name's ASCII letters and digits (others ``_``),
    made unique when two names would give one id (``a.b`` and ``a_b``), or a stage and a node one."""

    def __init__(self) -> None:
        self._of: dict[tuple[str, str], str] = {}
        self._taken: set[str] = set()

    def __call__(self, name: str, kind: str = "node") -> str:
        got = self._of.get((kind, name))
        if got is None:
            base = "n_" + "".join(c if c.isascii() and c.isalnum() else "_" for c in name)
            got, n = base, 1
            while got in self._taken:
                n += 1
                got = f"{base}_{n}"
            self._of[(kind, name)] = got
            self._taken.add(got)
        return got


#: Characters a Mermaid label cannot hold as they are, written as Mermaid's ``#code;`` entities:
#: the quote that ends the label, the entity mark itself, HTML's, Markdown's backtick and the pipe
#: of an edge label.
_MERMAID = {"#": "#35;", '"': "#34;", "&": "#38;", "<": "#60;", ">": "#62;", "`": "#96;", "|": "#124;"}


def _ml(text: str) -> str:
    """Text from a model inside a quoted Mermaid label: control characters as escapes
    (:func:`~resnet_trace.printable.visible`), then Mermaid's own entities."""
    return "".join(_MERMAID.get(c, c) for c in visible(text))


def render_mermaid(trace: Trace) -> str:
    """The chain as a Mermaid flowchart; every name from the model quoted by :func:`_ml`."""
    _nid = _Ids()
    lines = ["flowchart TD", f'  input(["input {shape_text(trace.input_shape)}"])']
    prev = "input"
    prev_shape: Shape | None = trace.input_shape
    stage = None
    edges: list[str] = []
    nodes_by_stage: list[tuple[str | None, list[str]]] = []
    for row in _chain(trace):
        st = row.stage if row.kind is Kind.BLOCK else None
        if not nodes_by_stage or st != stage:
            nodes_by_stage.append((st, []))
            stage = st
        group = nodes_by_stage[-1][1]
        if row.kind is Kind.BLOCK:
            body, add = _nid(row.name), _nid(row.name + "+")
            group.append(f'    {body}["{_ml(row.name)}<br/>{_ml(_body_label(trace, row))}"]')
            group.append(f'    {add}(("+ {_ml(row.name)}"))')
            edges.append(f'  {prev} -->|"{shape_text(prev_shape)}"| {body}')
            edges.append(f"  {body} --> {add}")
            edges.append(f'  {prev} -.->|"{_ml(skip_label(trace, row))}"| {add}')
            prev = add
        else:
            node = _nid(row.name)
            group.append(f'    {node}["{_ml(row.name)} ({row.kind})"]')
            edges.append(f'  {prev} -->|"{shape_text(prev_shape)}"| {node}')
            prev = node
        prev_shape = row.out_shape
    for st, group in nodes_by_stage:
        if st is None:
            lines.extend(g[2:] for g in group)
        else:
            lines.append(f'  subgraph {_nid(st, "stage")} ["{_ml(st)}"]')
            lines.extend(group)
            lines.append("  end")
    lines.extend(edges)
    if trace.error is None:
        lines.append(f'  output(["output {shape_text(trace.output_shape)}"])')
        lines.append(f'  {prev} -->|"{shape_text(prev_shape)}"| output')
    else:
        lines.append(f'  stopped{{{{"stopped at {_ml(trace.error.module)}"}}}}')
        lines.append(f'  {prev} -->|"{shape_text(prev_shape)}"| stopped')
    return "\n".join(lines) + "\n"


def _q(text: str, *lines: str) -> str:
    """A DOT quoted string (an id or a label) of ``text``, and of ``lines`` below it: control
    characters as escapes (:func:`~resnet_trace.printable.visible`), ``\\`` and ``"`` escaped
    as DOT reads them, the lines joined by DOT's own ``\\n``."""
    parts = [visible(t).replace("\\", "\\\\").replace('"', '\\"') for t in (text, *lines)]
    return '"' + "\\n".join(parts) + '"'


def render_dot(trace: Trace) -> str:
    lines = [
        "digraph resnet_trace {",
        "  rankdir=TB;",
        '  node [shape=box, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        f"  input [shape=oval, label={_q('input ' + shape_text(trace.input_shape))}];",
    ]
    prev = "input"
    prev_shape: Shape | None = trace.input_shape
    edges: list[str] = []
    clusters: dict[str, list[str]] = {}
    for row in _chain(trace):
        if row.kind is Kind.BLOCK:
            body, add = _q(row.name), _q(row.name + " +")
            decl = [
                f"    {body} [label={_q(row.name, _body_label(trace, row))}];",
                f'    {add} [shape=circle, label="+"];',
            ]
            clusters.setdefault(row.stage or "", []).extend(decl)
            edges.append(f"  {_q(prev)} -> {body} [label={_q(shape_text(prev_shape))}];")
            edges.append(f"  {body} -> {add};")
            edges.append(f"  {_q(prev)} -> {add} [style=dashed, label={_q(skip_label(trace, row))}];")
            prev = row.name + " +"
        else:
            lines.append(f"  {_q(row.name)} [label={_q(f'{row.name} ({row.kind})')}];")
            edges.append(f"  {_q(prev)} -> {_q(row.name)} [label={_q(shape_text(prev_shape))}];")
            prev = row.name
        prev_shape = row.out_shape
    for stage, decls in clusters.items():
        lines.append(f"  subgraph {_q('cluster_' + stage)} {{")
        lines.append(f"    label={_q(stage)};")
        lines.extend(decls)
        lines.append("  }")
    lines.extend(edges)
    end = (
        "output " + shape_text(trace.output_shape)
        if trace.error is None
        else f"stopped at {trace.error.module}"
    )
    lines.append(f"  end [shape=oval, label={_q(end)}];")
    lines.append(f"  {_q(prev)} -> end [label={_q(shape_text(prev_shape))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_graph(trace: Trace, fmt: GraphFormat) -> str:
    return render_mermaid(trace) if fmt == GraphFormat.MERMAID else render_dot(trace)
