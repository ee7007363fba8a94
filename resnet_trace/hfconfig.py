"""``--model PATH/config.json`` or ``--model FOLDER``: a Hugging Face ``transformers`` model built
from its config alone: no weights, no download, no remote code.

A reference is a config when it ends in ``.json`` (any case; whether or not it exists: a missing
file is then refused naming it) or names an existing folder (whose ``config.json`` is read; a
folder without one is refused). Everything else (``PATH.py:NAME``, ``package.module:NAME``) is
Python, imported by :mod:`resnet_trace.usermodel` as before.

The config is data, read like every other input (docs/security.md): a regular file of at most
:data:`MAX_CONFIG_BYTES`, UTF-8 JSON holding one object with an ``architectures`` list. Its first
entry names the class built (``getattr(transformers, name)``, a ``PreTrainedModel``); the config
object comes from ``model_type`` (``AutoConfig.for_model``) or, without one, from that class's
own ``config_class``. ``--model-arg KEY=VALUE`` pairs replace or add fields before either is read
(``num_hidden_layers=2``, ``architectures="['LlamaModel']"``); a key the config class does not
know is refused, so a typo is not silently ignored. Nothing here calls ``from_pretrained``,
reads ``auto_map``, or passes ``trust_remote_code``; the Hub is set offline while the model is
built, so a model whose constructor would fetch something fails instead.

Attention is chosen explicitly, never left to the library's default: ``sdpa`` when the class
supports it (one fused ``scaled_dot_product_attention`` call, which the operation counter and
the ``meta`` forward know), else ``eager``; ``--model-arg attn_implementation=eager`` picks
eager. The config's own ``torch_dtype``/``dtype`` is not applied: the model is built in float32
like every model this tool builds, and ``--dtype`` casts it.

No torch and no transformers at import time: :func:`is_config_ref` and :func:`config_path` are
called by the CLI before any work.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_trace.errors import UsageError
from resnet_trace.ops import is_fake

if TYPE_CHECKING:
    from torch import nn

#: A config.json larger than this is refused unread (Llama-3-70B's is under 1 KiB; the largest
#: multimodal configs with label maps are a few hundred KiB).
MAX_CONFIG_BYTES = 4 * 2**20
CONFIG_NAME = "config.json"
#: The attention implementations a built model may use: both run on any device, neither downloads.
ATTENTION = ("sdpa", "eager")
#: Text length of the default input (capped at the model's ``max_position_embeddings``).
TEXT_LENGTH = 128
#: Decoder length of the default input of an encoder-decoder model.
DECODER_LENGTH = 16
INSTALL = "pip install 'resnet-trace[transformers]'"
# The file's own dtype is not applied (the tool builds float32; --dtype casts). Fields starting
# with "_" (``_name_or_path``, ``_attn_implementation``, ...) and ``auto_map`` are dropped too.
_DTYPE_KEYS = ("torch_dtype", "dtype")


def is_config_ref(ref: str) -> bool:
    """Whether ``--model ref`` names a Hugging Face config: a path ending in ``.json`` (any case),
    or an existing folder (its ``config.json`` is read). ``PATH.py:NAME`` and
    ``package.module:NAME`` are not."""
    return bool(ref) and (ref.lower().endswith(".json") or os.path.isdir(ref))


def config_path(ref: str) -> Path:
    """The file a config reference reads: ``ref`` itself, or a folder's ``config.json``."""
    return Path(ref) / CONFIG_NAME if os.path.isdir(ref) else Path(ref)


def _one_line(exc: BaseException, limit: int = 240) -> str:
    """An exception as one line: its lines joined, its type named, cut at ``limit``."""
    text = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _read(path: Path, name: str) -> dict[str, Any]:
    """The config file's one JSON object, read bounded (a regular file, at most 4 MiB, UTF-8)."""
    from resnet_trace.loading import open_checked

    with open_checked(path, "--model") as (fh, st):
        if st.st_size > MAX_CONFIG_BYTES:
            raise UsageError(
                f"--model {name}: {st.st_size:,} bytes is more than a config's limit of "
                f"{MAX_CONFIG_BYTES:,}; it was not read"
            )
        try:
            data = fh.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"--model {name} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"--model {name} grew past a config's limit of {MAX_CONFIG_BYTES:,} bytes")
    if not data.strip():
        raise UsageError(f"--model {name} is empty, not a config")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"--model {name} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--model {name} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise UsageError(f"--model {name} is nested too deeply to be a config") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise UsageError(f"--model {name} is not usable JSON: {_one_line(exc)}") from None
    if not isinstance(doc, dict):
        raise UsageError(
            f"--model {name} holds a JSON {_json_kind(doc)}, not an object (a Hugging Face config.json)"
        )
    return doc


def _json_kind(value: object) -> str:
    kinds = (
        (bool, "boolean"),
        (int, "number"),
        (float, "number"),
        (str, "string"),
        (list, "list"),
        (dict, "object"),
    )
    return next((word for t, word in kinds if isinstance(value, t)), "null")


def _import_transformers(name: str) -> Any:
    try:
        import transformers
    except ImportError as exc:
        if exc.name in (None, "transformers"):
            raise UsageError(f"--model {name} needs the transformers package: {INSTALL}") from None
        raise UsageError(
            f"--model {name} needs the transformers package, which failed to import: {_one_line(exc)}"
        ) from None
    return transformers


def _architecture(fields: Mapping[str, Any], name: str, transformers: Any) -> Any:
    """The model class the config's first ``architectures`` entry names."""
    archs = fields.get("architectures")
    hint = 'add e.g. "architectures": ["LlamaForCausalLM"]'
    if archs is None:
        raise UsageError(f"--model {name} has no 'architectures' list naming the model class: {hint}")
    if not isinstance(archs, list):
        raise UsageError(
            f"--model {name}: 'architectures' must be a list of class names, not a {_json_kind(archs)}"
        )
    if not archs:
        raise UsageError(f"--model {name}: 'architectures' is empty: {hint}")
    arch = archs[0]
    if not isinstance(arch, str) or not arch.isidentifier() or arch.startswith("_"):
        raise UsageError(f"--model {name}: 'architectures' names {arch!r}, not a model class name")
    version = getattr(transformers, "__version__", "?")
    remote = (
        " (its auto_map names remote code, which resnet-trace never runs)" if "auto_map" in fields else ""
    )
    try:
        cls = getattr(transformers, arch, None)
    except Exception as exc:  # a lazy import of a class whose backend is missing (timm, ...)
        raise UsageError(f"--model {name}: transformers cannot load {arch!r}: {_one_line(exc)}") from None
    base = getattr(transformers, "PreTrainedModel", None)
    if cls is None:
        raise UsageError(f"--model {name}: transformers {version} has no model class {arch!r}{remote}")
    if not (isinstance(cls, type) and base is not None and issubclass(cls, base)):
        raise UsageError(f"--model {name}: {arch!r} is not a transformers model class (a PreTrainedModel)")
    return cls


def _config_class(fields: Mapping[str, Any], cls: Any, name: str, transformers: Any) -> Any:
    """The config class: ``model_type``'s, or the model class's own; the two must agree."""
    own = getattr(cls, "config_class", None)
    model_type = fields.get("model_type")
    if model_type is None:
        if own is None or own is getattr(transformers, "PretrainedConfig", None):
            raise UsageError(f"--model {name} has no 'model_type' and {cls.__name__} names no config class")
        return own
    if not isinstance(model_type, str):
        raise UsageError(f"--model {name}: 'model_type' must be a string, not a {_json_kind(model_type)}")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        version = getattr(transformers, "__version__", "?")
        raise UsageError(f"--model {name}: transformers {version} knows no model_type {model_type!r}")
    made = CONFIG_MAPPING[model_type]
    if (
        own is not None
        and own is not getattr(transformers, "PretrainedConfig", None)
        and not issubclass(made, own)
    ):
        raise UsageError(
            f"--model {name}: {cls.__name__} takes a {own.__name__}, but model_type "
            f"{model_type!r} makes a {made.__name__}"
        )
    return made


def _check_overrides(
    overrides: Mapping[str, Any], fields: Mapping[str, Any], config_class: Any, name: str
) -> None:
    """Every ``--model-arg`` key is a field the file has or the config class knows."""
    for key in overrides:
        if key in _DTYPE_KEYS:
            raise UsageError(
                f"--model-arg {key}: the model is built in float32; pass --dtype to trace it in "
                f"another (--model {name})"
            )
    try:
        default = config_class()
    except Exception:  # a config class that needs arguments: its own checks must do
        return
    for key in overrides:
        if key not in fields and key not in ("architectures", "model_type") and not hasattr(default, key):
            raise UsageError(
                f"--model-arg {key}: {config_class.__name__} has no field {key!r} (--model {name})"
            )


@contextmanager
def _offline_and_quiet() -> Iterator[None]:
    """The Hub offline and transformers' logging and warnings silenced, for the span of a build:
    nothing is fetched, and the only line on stderr is ours."""
    import huggingface_hub.constants  # a dependency of transformers
    import transformers.utils.logging as tf_logging

    hub: Any = huggingface_hub.constants
    offline = hub.HF_HUB_OFFLINE
    verbosity = tf_logging.get_verbosity()
    tf_logging.set_verbosity_error()
    hub.HF_HUB_OFFLINE = True  # read at each request: is_offline_mode() refuses any fetch
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        tf_logging.set_verbosity(verbosity)
        hub.HF_HUB_OFFLINE = offline


def build_from_config(
    path: str | os.PathLike[str],
    *,
    device: str = "meta",
    init_seed: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The ``transformers`` model a config file (or a folder's ``config.json``) describes.

    On ``meta`` it is built under ``torch.device("meta")``: no memory, no initialisation cost
    (Llama-3-70B in about 0.05 s once its transformers module is imported). On any other device it is built on the CPU under
    ``torch.manual_seed(init_seed)`` (when given), then moved. ``overrides`` replace or add
    config fields (``--model-arg``). Every failure is a one-line :class:`UsageError` naming the file.
    """
    file = config_path(os.fspath(path))
    name = repr(str(file))
    fields = _read(file, name)
    overrides = dict(overrides or {})
    attn = overrides.pop("attn_implementation", None)
    if attn is not None and attn not in ATTENTION:
        raise UsageError(
            f"--model-arg attn_implementation={attn!r}: choose {' or '.join(ATTENTION)} (--model {name})"
        )
    transformers = _import_transformers(name)
    merged = {**fields, **overrides}

    import torch

    with _offline_and_quiet():
        cls = _architecture(merged, name, transformers)
        config_class = _config_class(merged, cls, name, transformers)
        _check_overrides(overrides, fields, config_class, name)
        kwargs = {
            k: v
            for k, v in merged.items()
            if k not in ("model_type", "auto_map", *_DTYPE_KEYS) and not k.startswith("_")
        }
        if attn is None:
            attn = "sdpa" if getattr(cls, "_supports_sdpa", False) else "eager"
        try:
            config = config_class(**kwargs)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            raise UsageError(
                f"--model {name}: {config_class.__name__} refused it: {_one_line(exc)}"
            ) from None
        make = getattr(cls, "_from_config", None) or getattr(cls, "from_config", None)
        try:
            if device == "meta":
                with torch.device("meta"):
                    model = make(config, attn_implementation=attn) if make else cls(config)
            else:
                if init_seed is not None:
                    torch.manual_seed(init_seed)
                with torch.device("cpu"):
                    model = make(config, attn_implementation=attn) if make else cls(config)
                if not is_fake(
                    next(iter(model.parameters()), None)
                ):  # inside a FakeTensorMode (a shape-only build): nothing to move
                    model = model.to(device)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # MemoryError and SystemExit too: one line, exit 2
            raise UsageError(f"--model {name}: building {cls.__name__} failed: {_one_line(exc)}") from None
    if not isinstance(model, torch.nn.Module):  # pragma: no cover - a PreTrainedModel always is
        raise UsageError(f"--model {name}: {cls.__name__} built a {type(model).__name__}, not a module")
    return model


def _config_int(config: Any, *names: str) -> int | None:
    """The first of ``names`` the config (or its vision/audio part) holds as a positive int."""
    for part in (config, getattr(config, "vision_config", None), getattr(config, "audio_config", None)):
        for key in names:
            value = getattr(part, key, None) if part is not None else None
            if isinstance(value, (list, tuple)) and value:
                value = value[0]
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def example_inputs(model: Any) -> list[tuple[str, tuple[int, ...], str]]:
    """A default input for a ``transformers`` model: ``(name, shape, dtype word)`` per tensor.

    By ``model.main_input_name``: ``input_ids`` 1x128 int64 (capped at the model's
    ``max_position_embeddings``); ``pixel_values`` 1 x channels x size x size float32 (224 when
    the config names no size); ``input_features`` 1 x mel bins x frames float32 (Whisper: 80 x
    3000, i.e. twice ``max_source_positions``); ``input_values`` 1x16000 float32 (a second of
    16 kHz audio). An encoder-decoder model also gets ``decoder_input_ids`` 1x16 int64.
    Another main input is a :class:`UsageError` asking for an explicit input.
    """
    config = getattr(model, "config", None)
    main = getattr(model, "main_input_name", "input_ids")
    inputs: list[tuple[str, tuple[int, ...], str]] = []
    if main == "input_ids":
        limit = _config_int(config, "max_position_embeddings", "n_positions")
        inputs.append((main, (1, min(TEXT_LENGTH, limit or TEXT_LENGTH)), "int64"))
    elif main == "pixel_values":
        channels = _config_int(config, "num_channels") or 3
        size = _config_int(config, "image_size") or 224
        inputs.append((main, (1, channels, size, size), "float32"))
    elif main == "input_features":
        mels = _config_int(config, "num_mel_bins")
        if mels is not None:
            positions = _config_int(config, "max_source_positions")
            inputs.append((main, (1, mels, 2 * positions if positions else 3000), "float32"))
        else:  # Speech2Text: frames x features
            per_channel = _config_int(config, "input_feat_per_channel") or 80
            channels = _config_int(config, "input_channels") or 1
            inputs.append((main, (1, 584, per_channel * channels), "float32"))
    elif main == "input_values":
        inputs.append((main, (1, 16000), "float32"))
    else:
        raise UsageError(
            f"{type(model).__name__} takes {main!r}, for which resnet-trace has no default input; name one"
        )
    if getattr(config, "is_encoder_decoder", False):
        limit = _config_int(config, "max_target_positions")
        inputs.append(("decoder_input_ids", (1, min(DECODER_LENGTH, limit or DECODER_LENGTH)), "int64"))
    return inputs
