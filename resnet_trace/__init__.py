"""resnet-trace: see inside the ResNet50 of a Korean code review, block by block.

``import resnet_trace`` does not import torch; ``resnet_trace.trace`` does, on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "trace"]


def __getattr__(name: str) -> Any:
    if name == "trace":
        from resnet_trace.api import trace

        return trace
    raise AttributeError(name)
