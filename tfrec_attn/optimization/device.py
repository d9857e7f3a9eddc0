"""Where fine-tuning runs: the first GPU if there is one, else the CPU.

Used as `with tf.device(optimization_device()):` around `fit`; nothing else assumes a device.

Mixed precision: pruning works under a `mixed_float16` policy (the wrapper masks the float32
variables; our layers compute in float16 and keep the softmax in float32). Quantization-aware
training does not: TFMOT 0.8.1's fake-quant ops are float32-only (a `TypeError` inside
`QuantizeWrapperV2`), so `make_qat_model` refuses models with non-float32 layers; build them
under the `float32` policy.
"""

from tfrec_attn._keras import tf


def optimization_device() -> str:
    """`"/GPU:0"` when TensorFlow sees a GPU, `"/CPU:0"` otherwise.

    >>> optimization_device() in ("/GPU:0", "/CPU:0")
    True
    """
    return "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"
