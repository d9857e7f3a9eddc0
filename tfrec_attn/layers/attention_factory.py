"""Attention variants by name: `make_attention("local", window=8, num_heads=2)`."""

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
