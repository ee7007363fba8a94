"""``--format json`` and ``jsonl``: each report's document (``Report.to_dict``) written by ``dumps``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from resnet_trace.records import Report, Trace, dumps


def render_json(reports: Sequence[Report]) -> str:
    """One document for one input, an array for several."""
    return "".join(json_chunks(reports))


def json_chunks(reports: Iterable[Report], count: int | None = None) -> Iterator[str]:
    """:func:`render_json`'s text a document at a time, so that a sweep of 10,000 inputs never
    holds 10,000 dicts or the whole text: an array's items are ``dumps``' text of each document,
    indented one level more, which is what ``dumps`` of the whole list writes. ``count`` (how
    many reports there will be) lets ``reports`` be a stream."""
    if count is None:
        reports = list(reports)
        count = len(reports)
    if count == 1:
        for report in reports:
            yield dumps(report.to_dict())
        return
    first = True
    for report in reports:
        text = dumps(report.to_dict())[:-1].replace("\n", "\n  ")
        yield ("[\n  " if first else ",\n  ") + text
        first = False
    yield dumps([]) if first else "\n]\n"


def render_jsonl(reports: Sequence[Report]) -> str:
    """One compact document per line, always."""
    return "".join(jsonl_chunks(reports))


def jsonl_chunks(reports: Iterable[Report]) -> Iterator[str]:
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
