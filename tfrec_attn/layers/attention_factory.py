"""Attention variants by name: `make_attention("local", window=8, num_heads=2)`."""

import inspect

from tfrec_attn.layers.base_attention import BaseAttention
from tfrec_attn.layers.linear_attention import LinearAttention
from tfrec_attn.layers.local_attention import LocalAttention
from tfrec_attn.layers.low_rank_attention import LowRankAttention
from tfrec_attn.layers.multi_head_attention import MultiHeadAttention
from tfrec_attn.layers.top_k_attention import TopKAttention

ATTENTION_KINDS = {
    "full": MultiHeadAttention,
    "low_rank": LowRankAttention,
    "local": LocalAttention,
    "linear": LinearAttention,
    "top_k": TopKAttention,
}


def make_attention(kind: str, **kwargs) -> BaseAttention:
    """Builds the attention layer registered under `kind` with `kwargs`.

    Args:
        kind: one of `ATTENTION_KINDS` (`"full"`, `"low_rank"`, `"local"`, `"linear"`,
            `"top_k"`).
        **kwargs: constructor arguments of that class.

    Returns:
        The (unbuilt) layer.

    Example:
    >>> make_attention("local", window=4, num_heads=2).window
    4
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(
            f"Unknown attention kind {kind!r}. Expected one of {sorted(ATTENTION_KINDS)}.")
    return ATTENTION_KINDS[kind](**kwargs)


def check_attention_option_names(kind: str, options: dict | None, reserved=()) -> None:
    """Each key of `options` is a constructor argument of the `kind` variant, other than the
    `reserved` ones its caller sets itself; otherwise a `ValueError` listing the variant's
    options (a typo is named when the model is configured, not at its first call as Keras'
    "Keyword argument not understood").

    Example:
    >>> check_attention_option_names("local", {"window": 4})
    >>> check_attention_option_names("local", {"windw": 4})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: attention_options ['windw'] are not options of attention='local' (its ...
    """
    own = _arguments(ATTENTION_KINDS[kind], reserved)
    # a variant taking **kwargs forwards them to BaseAttention (key_dim, use_bias, ...)
    common = _arguments(BaseAttention, reserved) if _takes_kwargs(ATTENTION_KINDS[kind]) else []
    unknown = sorted(set(options or {}) - set(own) - set(common))
    if unknown:
        also = f", and BaseAttention's: {common}" if common else ""
        raise ValueError(f"attention_options {unknown} are not options of "
                         f"attention={kind!r} (its options: {own}{also}). "
                         f"Received: attention_options={options!r}")


def _arguments(cls, leave_out=()) -> list[str]:
    parameters = inspect.signature(cls.__init__).parameters.items()
    return sorted(name for name, p in parameters if name != "self" and name not in leave_out
                  and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))


def _takes_kwargs(cls) -> bool:
    return any(p.kind == p.VAR_KEYWORD
               for p in inspect.signature(cls.__init__).parameters.values())
