"""``--format json`` and ``jsonl``: each report's document (``Report.to_dict``) written by ``dumps``."""

from __future__ import annotations

from collections.abc import Sequence

from resnet_trace.records import Report, Trace, dumps


def render_json(reports: Sequence[Report]) -> str:
    """One document for one input, an array for several."""
    docs = [r.to_dict() for r in reports]
    return dumps(docs[0] if len(docs) == 1 else docs)


def render_jsonl(reports: Sequence[Report]) -> str:
    """One compact document per line, always."""
    return "".join(dumps(r.to_dict(), indent=None) for r in reports)


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
