"""Where pruning, QAT and fine-tuning run: the first GPU if there is one, else the CPU.

`optimization_scope()` is entered around everything that creates or trains variables
(`prune_sasrec`, `qat_sasrec`, `optimize_run`'s fine-tuning); nothing else assumes a device.
On a GPU, soft placement is switched on, so ops without a GPU kernel (string, int64 id and
TFMOT bookkeeping ops) run on the CPU instead of failing.

Mixed precision: pruning works under a `mixed_float16` policy (the wrapper masks the float32
variables; our layers compute in float16 and keep the softmax in float32). Quantization-aware
training does not: TFMOT 0.8.1's fake-quant ops are float32-only (a `TypeError` inside
`QuantizeWrapperV2`), so `make_qat_model` refuses models with non-float32 layers; build them
under the `float32` policy. Neither path changes the global policy: a model keeps the policy it
was built with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tfrec_attn._keras import tf


def optimization_device() -> str:
    """`"/GPU:0"` when TensorFlow sees a (logical, i.e. visible) GPU, `"/CPU:0"` otherwise.

    >>> optimization_device() in ("/GPU:0", "/CPU:0")
    True
    """
    return "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"


@contextlib.contextmanager
def optimization_scope() -> Iterator[str]:
    """`with optimization_scope() as device:` runs the block under `tf.device(device)`.

    On a GPU, soft device placement is enabled first (see the module docstring).

    >>> with optimization_scope() as device:
    ...     device in ("/GPU:0", "/CPU:0")
    True
    """
    device = optimization_device()
    if device != "/CPU:0":
        tf.config.set_soft_device_placement(True)
    with tf.device(device):
        yield device
