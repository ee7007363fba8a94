"""``--input [NAME=]DIMS[:DTYPE][RANGE]``: what to feed a model, read without importing torch.

One ``--input`` value is one call of the model: its tensors joined by ``,``, each one
``[NAME=]DIMS[:DTYPE][RANGE]``:

* ``DIMS``: any number of positive dimensions joined by ``x`` (``1x128``, ``1x3x8x112x112``);
  a dimension may sweep, ``lo-hi[:step]``, and every swept dimension of one value moves
  together (so they share one range);
* ``DTYPE``: a torch dtype name (``int64``, ``bool``, ``bfloat16``...); without one, a floating
  input in the model's own floating dtype;
* ``RANGE``: ``[lo,hi)``, the values ``run`` draws from, uniformly (integers: ``lo`` to ``hi - 1``);
* ``NAME``: the tensor goes to ``forward`` as that keyword; without a name, positionally, in order.

The built-in seed keeps its own reader (:func:`resnet_trace.spec.expand_inputs`) and messages.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

from resnet_trace.records import InputTensor
from resnet_trace.spec import MAX_DIM, MAX_SWEEP, InvalidType, InvalidValue
from resnet_trace.units import tensor_text

INPUT_FORM = (
    "[NAME=]DIMS[:DTYPE][[lo,hi)], e.g. 1x128:int64 or input_ids=2x16:int64,attention_mask=2x16:int64"
)
# The element count of one input: far below PyTorch's 64-bit sizes, so that no shape derived from
# it overflows, and far above any input a model is traced with.
MAX_ELEMENTS = 2**48

#: Accepted dtype words (torch's own names and aliases) -> the canonical word (``str(dtype)`` less ``torch.``).
DTYPE_WORDS: dict[str, str] = {
    "float32": "float32",
    "float": "float32",
    "float64": "float64",
    "double": "float64",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "short": "int16",
    "int32": "int32",
    "int": "int32",
    "int64": "int64",
    "long": "int64",
    "bool": "bool",
    "complex64": "complex64",
    "complex128": "complex128",
}
FLOATING = frozenset({"float32", "float64", "float16", "bfloat16"})

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TAIL = re.compile(r":(?P<dtype>[A-Za-z][A-Za-z0-9_]*)\Z")
_RANGE = re.compile(r"\[(?P<lo>[^,\[\]]+),(?P<hi>[^,\[\])]+)\)\Z")
_DIM = re.compile(r"[1-9][0-9]{0,18}\Z")
_SWEEP = re.compile(r"(?P<lo>[0-9]{1,19})(?:-|\.\.)(?P<hi>[0-9]{1,19})(?::(?P<step>[0-9]{1,19}))?\Z")


def _quote(value: str) -> str:
    return repr(value) if len(value) <= 80 else repr(value[:60]) + f"... ({len(value):,} characters)"


class InputError(InvalidValue):
    """A bad ``--input`` value (``inputs`` to a Python caller)."""

    def __init__(self, message: str) -> None:
        super().__init__("inputs", message)


def _split(value: str) -> list[str]:
    """The tensors of one value: split at commas outside a ``[lo,hi)`` range."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(value):
        if ch == "[":
            depth += 1
        elif ch in ")]":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p.strip() for p in parts]


def _bound(text: str, value: str) -> float:
    try:
        number = float(text.strip())
    except ValueError:
        raise InputError(f"--input {_quote(value)}: {text.strip()!r} is not a number in [lo,hi)") from None
    if not math.isfinite(number):
        raise InputError(f"--input {_quote(value)}: a range takes finite numbers, not {text.strip()!r}")
    return number


def _one(item: str, value: str) -> tuple[str | None, list[str], str | None, tuple[float, float] | None]:
    """One tensor's parts: name, dimension words (sweeps unexpanded), dtype word, range."""
    if not item:
        raise InputError(f"--input {_quote(value)}: an empty tensor between commas; expected {INPUT_FORM}")
    name: str | None = None
    head, eq, rest = item.partition("=")
    if eq:
        name = head.strip()
        if not _NAME.match(name):
            raise InputError(f"--input {_quote(value)}: {name!r} is not a Python name; expected {INPUT_FORM}")
        item = rest.strip()
    bounds = None
    m = re.search(r"\[[^\[]*\Z", item)
    if m is not None:
        r = _RANGE.match(m.group(0))
        if r is None:
            raise InputError(
                f"--input {_quote(value)}: a range is [lo,hi), e.g. input_ids=1x128:int64[0,32000)"
            )
        lo, hi = _bound(r["lo"], value), _bound(r["hi"], value)
        if not lo < hi:
            raise InputError(f"--input {_quote(value)}: the range [{r['lo']},{r['hi']}) is empty")
        bounds = (lo, hi)
        item = item[: m.start()]
    dtype = None
    t = _TAIL.search(item)
    if t is not None:
        word = t["dtype"].lower()
        if word not in DTYPE_WORDS:
            known = ", ".join(sorted(set(DTYPE_WORDS.values())))
            raise InputError(f"--input {_quote(value)}: unknown dtype {t['dtype']!r} (known: {known})")
        dtype = DTYPE_WORDS[word]
        item = item[: t.start()]
    dims = [d.strip() for d in item.strip().lower().split("x")]
    for d in dims:
        if not (_DIM.match(d) or _SWEEP.match(d)):
            hint = ""
            if d.startswith("-"):
                hint = " (dimensions cannot be negative)"
            elif d and d.strip("0") == "":
                hint = " (dimensions cannot be 0)"
            elif len(d) > 19 and d.isdigit():
                hint = f" (each dimension is at most {MAX_DIM:,})"
            raise InputError(f"--input {_quote(value)} is not a shape{hint}: expected {INPUT_FORM}")
    if bounds is not None and dtype == "bool":
        raise InputError(f"--input {_quote(value)}: a bool input takes no range")
    return name, dims, dtype, bounds


def _sizes(value: str, part: str) -> range:
    m = _SWEEP.match(part)
    assert m is not None
    lo, hi = int(m["lo"]), int(m["hi"])
    step = int(m["step"]) if m["step"] is not None else 1
    if lo < 1 or hi < lo or step < 1:
        raise InputError(f"--input {_quote(value)}: a sweep is lo-hi[:step] with 1 <= lo <= hi and step >= 1")
    if hi > MAX_DIM:
        raise InputError(f"--input {_quote(value)}: each dimension must be at most {MAX_DIM:,}")
    if (hi - lo) // step + 1 > MAX_SWEEP:
        raise InputError(f"--input {_quote(value)} sweeps more than {MAX_SWEEP:,} sizes")
    return range(lo, hi + 1, step)


def _checked(tensors: list[InputTensor], value: str) -> tuple[InputTensor, ...]:
    names = [t.name for t in tensors if t.name is not None]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"--input {_quote(value)} names {dup!r} twice")
    seen_name = False
    for t in tensors:
        if t.name is not None:
            seen_name = True
        elif seen_name:
            raise InputError(f"--input {_quote(value)}: positional inputs come before named ones")
        if max(t.shape) > MAX_DIM:
            raise InputError(f"--input {_quote(value)}: each dimension must be at most {MAX_DIM:,}")
        if math.prod(t.shape) > MAX_ELEMENTS:
            raise InputError(
                f"--input {_quote(value)} is too large to trace: {math.prod(t.shape):,} elements in one "
                f"tensor is over {MAX_ELEMENTS:,}"
            )
    return tuple(tensors)


def parse_input(value: str) -> list[tuple[InputTensor, ...]]:
    """One ``--input`` value: one call's tensors, or one per size of a sweep."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"--input {value!r} is empty; expected {INPUT_FORM}")
    parsed = [_one(item, value) for item in _split(value.strip())]
    swept = {d for _, dims, _, _ in parsed for d in dims if _SWEEP.match(d)}
    if len(swept) > 1:
        raise InputError(
            f"--input {_quote(value)}: swept dimensions move together, so they take one range "
            f"(e.g. input_ids=1x16-512:16:int64,attention_mask=1x16-512:16:int64)"
        )
    sizes: Sequence[int | None] = _sizes(value, next(iter(swept))) if swept else [None]
    out = []
    for size in sizes:
        tensors = [
            InputTensor(
                name=name,
                shape=tuple(size if _SWEEP.match(d) else int(d) for d in dims),  # type: ignore[misc]
                dtype=dtype,
                low=bounds[0] if bounds else None,
                high=bounds[1] if bounds else None,
            )
            for name, dims, dtype, bounds in parsed
        ]
        out.append(_checked(tensors, value))
    return out


def parse_inputs(values: Iterable[str]) -> list[tuple[InputTensor, ...]]:
    """Every ``--input`` value (repeat it for another trace), sweeps expanded."""
    calls: list[tuple[InputTensor, ...]] = []
    for value in values:
        calls.extend(parse_input(value))
        if len(calls) > MAX_SWEEP:
            raise InputError(f"--input: more than {MAX_SWEEP:,} inputs to trace")
    return calls


def from_api(inputs: object) -> tuple[InputTensor, ...]:
    """The Python API's ``inputs``: a ``{name: (shape, dtype)}`` mapping (or ``{name: shape}``),
    a sequence of such pairs or shapes (positional), or an ``--input`` string.

    Example tensors are read by :func:`resnet_trace.feed.describe` (this module has no torch).
    """
    if isinstance(inputs, str):
        calls = parse_input(inputs)
        if len(calls) != 1:
            raise InputError(f"inputs={inputs!r} names {len(calls)} calls; trace takes one")
        return calls[0]
    if isinstance(inputs, Mapping):
        items: list[tuple[str | None, object]] = [(k, v) for k, v in inputs.items()]
        for k, _ in items:
            if not isinstance(k, str) or not _NAME.match(k):
                raise InvalidType("inputs", f"inputs: each name must be a Python name, not {k!r}")
    elif isinstance(inputs, (list, tuple)):
        items = [(None, v) for v in inputs]
    else:
        raise InvalidType("inputs", f"inputs must be a dict, a list or a str, not {type(inputs).__name__}")
    if not items:
        raise InputError("inputs is empty")
    tensors = [_api_tensor(name, v) for name, v in items]
    return _checked(tensors, repr(inputs)[:200])


def _api_tensor(name: str | None, value: object) -> InputTensor:
    what = f"inputs[{name!r}]" if name is not None else "inputs"
    shape, dtype = value, None
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and isinstance(value[0], (tuple, list))
        and not isinstance(value[1], (int, bool))
    ):
        shape, dtype = value
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (tuple, list)) or not shape:
        raise InvalidType(
            "inputs", f"{what} must be a shape (a tuple of ints) or (shape, dtype), not {value!r}"
        )
    if any(isinstance(d, bool) or not isinstance(d, int) for d in shape):
        raise InvalidType("inputs", f"{what}: a shape holds ints, not {shape!r}")
    if any(d < 1 for d in shape):
        raise InvalidValue("inputs", f"{what}: every dimension must be at least 1, not {tuple(shape)!r}")
    word = None
    if dtype is not None:
        text = str(dtype).removeprefix("torch.").lower()
        if text not in DTYPE_WORDS:
            raise InvalidValue("inputs", f"{what}: unknown dtype {dtype!r}")
        word = DTYPE_WORDS[text]
    return InputTensor(name=name, shape=tuple(int(d) for d in shape), dtype=word)


def spec_text(tensors: Sequence[InputTensor]) -> str:
    """The tensors as the ``--input`` value that names them."""
    return ",".join(tensor_text(t) for t in tensors)
