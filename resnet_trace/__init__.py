"""resnet-trace: see inside the ResNet50 of a Korean code review, block by block.

``import resnet_trace`` does not import torch; ``resnet_trace.trace`` (and ``check``, ``diff``,
``compare``, ``tree``) do, on first use. docs/api.md documents them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "check", "compare", "diff", "trace", "tree"]


def __getattr__(name: str) -> Any:
    if name in ("trace", "check", "compare", "diff", "tree"):
        from resnet_trace import api

        return getattr(api, name)
    raise AttributeError(name)
