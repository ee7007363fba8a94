"""Operations of a forward at the ATen level: MACs, the operation mode, shape answers on ``meta``.

* :mod:`~resnet_trace.ops.macs`: multiply-accumulates of one operation;
* :mod:`~resnet_trace.ops.mode`: the operation mode (``OpMode``) and the tensors in a value;
* :mod:`~resnet_trace.ops.meta`: shortcuts on ``meta`` (``META_RULES``) and ``MetaBuild``.
"""

from resnet_trace.ops.fake import is_fake
from resnet_trace.ops.macs import op_macs
from resnet_trace.ops.meta import META_RULES, MetaBuild, broadcast
from resnet_trace.ops.mode import ADDS, OpMode, OpObserver, tensors_in

__all__ = [
    "ADDS",
    "META_RULES",
    "MetaBuild",
    "OpMode",
    "OpObserver",
    "broadcast",
    "is_fake",
    "op_macs",
    "tensors_in",
]
