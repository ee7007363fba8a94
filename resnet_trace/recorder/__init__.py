"""The hook recorder: module calls become rows; operations (from :mod:`resnet_trace.ops`) fill them.

* :mod:`~resnet_trace.recorder.session`: ``hook_session(...)``, the one way to hook a model, and
  ``keep_training_flags``;
* :mod:`~resnet_trace.recorder.recorder`: the ``Recorder`` of one forward and its rows (``OpenRow``);
* :mod:`~resnet_trace.recorder.dataflow`: skip paths, the joins on each block's stream;
* :mod:`~resnet_trace.recorder.blocks`: which classes are the blocks (``choose_blocks``);
* :mod:`~resnet_trace.recorder.replay`: a forward's events logged, replayed for the blocks found;
* :mod:`~resnet_trace.recorder.structure`: a model's module names and block holders, cached;
* :mod:`~resnet_trace.recorder.stats`: activation statistics (``ActivationStats``).
"""

from resnet_trace.recorder.blocks import BlockChoice, BlockRule, choose_blocks
from resnet_trace.recorder.recorder import HookFailure, OpenRow, Recorder, row_keys
from resnet_trace.recorder.session import HookSession, hook_session, keep_training_flags
from resnet_trace.recorder.stats import ActivationStats

__all__ = [
    "ActivationStats",
    "BlockChoice",
    "BlockRule",
    "HookFailure",
    "HookSession",
    "OpenRow",
    "Recorder",
    "choose_blocks",
    "hook_session",
    "keep_training_flags",
    "row_keys",
]
