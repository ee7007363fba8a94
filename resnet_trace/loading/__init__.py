"""Reading what users give us: checkpoints, arrays and images, checked before they are read.

Every file is untrusted data (docs/security.md). Before a byte of it is read into memory:
it must be a regular file (not a device, FIFO or socket, directly or through a symlink); its
size, and the size its header or zip directory declares, go through the memory guard; and a
tensor's materialised size is checked before it is copied. Nothing is ever unpickled unsafely.

Nothing returned is ever pages of the file: a ``.pt`` is checked on a map of the file and then
read into private memory (:func:`safe_torch_load`), arrays are read with ``read``, so another
process truncating or replacing a file once it is read cannot touch a running forward. A file
that changes while it is read (its size, modification time or inode, or a read that comes up
short) is a UsageError saying so.

One module a job: ``files`` (opening a file safely), ``torchfiles`` (a ``.pt`` read weights-only),
``weights`` (``--weights`` into a model), ``npy`` (numpy's format), ``one_input`` (``--input-file``
as one float tensor) and ``named_inputs`` (``--input-file`` as one call's named tensors).
"""

from __future__ import annotations

from resnet_trace.loading.files import (
    CHANGED,
    changed,
    checked_file,
    file_change,
    open_checked,
    open_unchanged,
)
from resnet_trace.loading.named_inputs import MAX_INPUTS, load_inputs
from resnet_trace.loading.one_input import IMAGE_SUFFIXES, load_input
from resnet_trace.loading.torchfiles import MAX_ZIP_ENTRIES, safe_torch_load, tensor_problem
from resnet_trace.loading.weights import WRAPPERS, checkpoint_config, load_weights, unwrap_state_dict

__all__ = [
    "CHANGED",
    "IMAGE_SUFFIXES",
    "MAX_INPUTS",
    "MAX_ZIP_ENTRIES",
    "WRAPPERS",
    "changed",
    "checked_file",
    "checkpoint_config",
    "file_change",
    "load_input",
    "load_inputs",
    "load_weights",
    "open_checked",
    "open_unchanged",
    "safe_torch_load",
    "tensor_problem",
    "unwrap_state_dict",
]
