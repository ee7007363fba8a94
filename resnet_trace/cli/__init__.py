"""The command line: thin commands over the library (``commands``), their options (``options``), how a
result leaves (``output``) and the edge with streams and files (``io``)."""

from resnet_trace.cli.commands import app, main

__all__ = ["app", "main"]
