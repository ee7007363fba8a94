"""``check`` and ``diff``: saved traces read as data, re-traced through the one route, compared field by field.

A golden file never names code to run: a trace of a user model needs the caller's own ``model``.
"""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from resnet_trace.choice import ModelChoice, TraceOptions
from resnet_trace.diffing import compare_all
from resnet_trace.errors import UsageError
from resnet_trace.goldenfile import FILTER_SECONDS, load_documents
from resnet_trace.inputs import parse_inputs
from resnet_trace.layout import BASE_DIM, NUM_CLASSES
from resnet_trace.records import Depth, Differences, Head, InputTensor, Report, Shape, Trace, Variant
from resnet_trace.spec import parse_shape, word


def report(
    trace: Trace, *, depth: Depth | str = Depth.BLOCK, collapse: bool = False, filter: str | None = None
) -> Report:
    """The rows of ``trace`` shown at ``depth`` (filtered by the ``filter`` regex, folded with ``collapse``)."""
    from resnet_trace.views import view

    d = Depth(depth)
    return Report(
        trace=trace,
        rows=tuple(view(trace.rows, d, fold=collapse, pattern=filter)),
        depth=d,
        collapsed=collapse,
        filter=filter,
    )


def check(
    golden: str | os.PathLike[str],
    *,
    base_dim: int | None = None,
    num_classes: int | None = None,
    inputs: Sequence[Shape] | None = None,
    variant: Variant | str | None = None,
    head: Head | str | None = None,
    model: str | None = None,
) -> Differences:
    """Re-trace the configuration recorded in ``golden`` (or the overrides) and compare every field."""
    from resnet_trace.pipeline import trace_inputs

    docs = load_documents(Path(golden))
    if inputs:
        plan = [(docs[min(i, len(docs) - 1)], tuple(s)) for i, s in enumerate(inputs)]
    else:  # a document repeated in the file is one object (load_documents): its input is read once
        recorded: dict[int, Any] = {}
        plan = []
        for doc in docs:
            if id(doc) not in recorded:
                recorded[id(doc)] = recorded_input(doc)
            plan.append((doc, recorded[id(doc)]))
    # Documents of one configuration are traced together: the model is built once for all their inputs,
    # and each distinct input is traced once, however many documents record it. (A choice's arguments
    # are literals read from the document, and an input is records of ints and words: a repr is an identity.)
    groups: dict[str, tuple[ModelChoice, dict[str, Any]]] = {}
    chosen: dict[int, str] = {}
    keys = []
    for doc, shape in plan:
        if id(doc) not in chosen:
            choice = _choice(doc, golden, base_dim, num_classes, variant, head, model)
            chosen[id(doc)] = repr(choice)
            groups.setdefault(chosen[id(doc)], (choice, {}))
        key = (chosen[id(doc)], repr(shape))
        groups[key[0]][1].setdefault(key[1], shape)
        keys.append(key)
    got: dict[tuple[str, str], Trace] = {}
    for name, (choice, shapes) in groups.items():
        traces = trace_inputs(choice, list(shapes.values()), TraceOptions())
        got.update(((name, s), t) for s, t in zip(shapes, traces))
    # Each distinct view of a trace (depth, collapse, filter) is made once; documents share it.
    shown: dict[tuple, dict] = {}
    got_docs = []
    for (doc, _), key in zip(plan, keys):
        pattern = doc.get("filter")
        view = (*key, str(doc.get("depth", Depth.BLOCK)), bool(doc.get("collapsed")), pattern)
        if view not in shown:
            with time_bound(FILTER_SECONDS if pattern else None, f"{str(golden)!r}: its filter {pattern!r}"):
                shown[view] = report(
                    got[key],
                    depth=doc.get("depth", Depth.BLOCK),
                    collapse=bool(doc.get("collapsed")),
                    filter=pattern,
                ).to_dict()
        got_docs.append(shown[view])
    return Differences(expected=str(golden), got="this trace", differences=tuple(compare_all(docs, got_docs)))


class _TimeUp(Exception):
    pass


@contextlib.contextmanager
def time_bound(seconds: float | None, what: str) -> Iterator[None]:
    """Stop the work inside after ``seconds`` with a UsageError naming ``what`` (exit 2).

    A ``SIGALRM`` timer: Python's ``re`` checks for signals while it backtracks, so even a
    catastrophic match stops. Only where there is one to set (POSIX, the main thread, no timer
    already running); elsewhere the work runs unbounded, and :func:`~resnet_trace.goldenfile.filter_problem`
    has refused the patterns that backtrack without end.
    """
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    )
    if not usable or seconds is None:
        yield
        return

    def alarm(signum: int, frame: object) -> None:
        raise _TimeUp

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _TimeUp:
        raise UsageError(f"{what} took more than {seconds:g} s to match; it was stopped") from None
    finally:
        signal.signal(signal.SIGALRM, previous)


def recorded_input(doc: dict) -> Any:
    """The input a document was traced with: its ``inputs`` (any tensors), else its ``input_shape``
    (NxCxHxW for the built-in model, read by the seed's own rules)."""
    from resnet_trace.inputs import spec_text

    tensors = doc.get("inputs")
    if tensors:
        call = tuple(
            InputTensor(t.get("name"), tuple(t["shape"]), t["dtype"], t.get("low"), t.get("high"))
            for t in tensors
        )
        parse_inputs([spec_text(call)])  # the limits every --input is held to
        return call
    shape = doc["input_shape"]
    if (doc.get("model") or {}).get("source", "builtin") == "builtin":
        return parse_shape("x".join(map(str, shape)))
    return parse_inputs(["x".join(map(str, shape))])[0]


def _choice(
    doc: dict,
    golden: str | os.PathLike[str],
    base_dim: int | None,
    num_classes: int | None,
    variant: Variant | str | None,
    head: Head | str | None,
    model: str | None,
) -> ModelChoice:
    """The model a document records, with the caller's overrides."""
    m = doc.get("model") or {}
    source = m.get("source", "builtin")
    if model is None and source != "builtin":
        raise UsageError(
            f"{str(golden)!r} was traced from {source!r}; check never runs code a data file names: "
            f"pass --model {source} yourself if you trust it"
        )
    # The seed's options: the overrides, else the words the document recorded (a model of your
    # own records "custom": its code decides), else the built-in defaults.
    words: dict[str, Any] = {}
    for field, kind, given in (("variant", Variant, variant), ("head", Head, head)):
        if given is not None:
            words[field] = word(field, kind, given)
        elif model is None and m.get(field) in [w.value for w in kind]:
            words[field] = m[field]
    bd = base_dim if base_dim is not None else m.get("base_dim")
    nc = num_classes if num_classes is not None else m.get("num_classes")
    if model is None:
        bd, nc = bd or BASE_DIM, nc or NUM_CLASSES
    block = m.get("block") if model is not None and not m.get("block_found") else None
    # The arguments your model was built with, recorded as Python literals; read as data
    # (ast.literal_eval), and passed only to the code you named with ``model``.
    args = _recorded_args(m) if model is not None else {}
    return ModelChoice(
        model=model,
        base_dim=bd,
        num_classes=nc,
        args=args,
        block=tuple(block.split(",")) if block else None,
        **words,
    )


def _recorded_args(model_doc: dict) -> dict[str, Any]:
    """``model.args`` of a saved trace, less ``base_dim``/``num_classes`` (recorded on their own)."""
    out: dict[str, Any] = {}
    for key, text in (model_doc.get("args") or {}).items():
        if key in ("base_dim", "num_classes") or not isinstance(text, str) or not str(key).isidentifier():
            continue
        try:
            out[str(key)] = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            out[str(key)] = text
    return out
