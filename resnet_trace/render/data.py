"""``--format json`` and ``jsonl``: each report's document (``Report.to_dict``) written by ``dumps``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from resnet_trace.records import Report, Trace, dumps


def render_json(reports: Sequence[Report]) -> str:
    """One document for one input, an array for several."""
    return "".join(json_chunks(reports))


def json_chunks(reports: Sequence[Report]) -> Iterator[str]:
    """:func:`render_json`'s text a document at a time, so that a sweep of 10,000 inputs never
    holds 10,000 dicts or the whole text: an array's items are ``dumps``' text of each document,
    indented one level more, which is what ``dumps`` of the whole list writes."""
    if len(reports) == 1:
        yield dumps(reports[0].to_dict())
        return
    if not reports:
        yield dumps([])
        return
    for i, report in enumerate(reports):
        text = dumps(report.to_dict())[:-1].replace("\n", "\n  ")
        yield ("[\n  " if i == 0 else ",\n  ") + text
    yield "\n]\n"


def render_jsonl(reports: Sequence[Report]) -> str:
    """One compact document per line, always."""
    return "".join(jsonl_chunks(reports))


def jsonl_chunks(reports: Sequence[Report]) -> Iterator[str]:
    """:func:`render_jsonl`'s lines, one document at a time."""
    for report in reports:
        yield dumps(report.to_dict(), indent=None)


def model_title(t: Trace) -> str:
    """``ResNet(base_dim=64, num_classes=2)`` for the seed; for a ``--model``, the class built, its
    parameters and the arguments it was given: ``ViTForImageClassification (86,567,656 params)
    from vit.py:build(layers=2)``."""
    m = t.model
    if m.source == "builtin":
        return f"ResNet(base_dim={m.base_dim}, num_classes={m.num_classes})"
    args = ", ".join(f"{k}={v}" for k, v in m.args)
    params = f" ({m.model_params:,} params)" if m.model_params is not None else ""
    built = f"{m.model_class}{params}" if m.model_class else m.source
    if m.source == "python":
        return built
    if ":" not in m.source.replace("\\", "/").rsplit("/", 1)[-1]:  # a config file or folder: no call
        return f"{built} from {m.source}" + (f" ({args})" if args else "")
    return f"{built} from {m.source}({args})"
