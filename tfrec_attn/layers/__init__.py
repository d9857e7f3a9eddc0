"""tfrec_attn layers: the attention family and the building blocks of sequential recommenders."""

from tfrec_attn.layers.additive_attention import AdditiveAttention
from tfrec_attn.layers.attention_factory import ATTENTION_KINDS, make_attention
from tfrec_attn.layers.base_attention import BaseAttention
from tfrec_attn.layers.graph_attention import GraphAttention
from tfrec_attn.layers.item_dropout import ItemDropout
from tfrec_attn.layers.item_embedding import ItemEmbedding
from tfrec_attn.layers.linear_attention import LinearAttention
from tfrec_attn.layers.local_attention import LocalAttention
from tfrec_attn.layers.low_rank_attention import LowRankAttention
from tfrec_attn.layers.masked_mean_pooling import MaskedMeanPooling
from tfrec_attn.layers.multi_head_attention import MultiHeadAttention
from tfrec_attn.layers.multimodal_fusion import MultimodalFusion
from tfrec_attn.layers.padding_mask import LastPosition, PaddingMask
from tfrec_attn.layers.position_embedding import PositionEmbedding, SinusoidalPositionEmbedding
from tfrec_attn.layers.scaled_dot_product_attention import ScaledDotProductAttention
from tfrec_attn.layers.self_attention_pooling import SelfAttentionPooling
from tfrec_attn.layers.stop_gradient import StopGradient
from tfrec_attn.layers.target_attention import TargetAttention
from tfrec_attn.layers.top_k import HistoryTopK, top_k_outputs
from tfrec_attn.layers.top_k_attention import TopKAttention
from tfrec_attn.layers.transformer_encoder_block import TransformerEncoderBlock
from tfrec_attn.layers.transition_prior import TransitionPrior

__all__ = [
    "ATTENTION_KINDS",
    "AdditiveAttention",
    "BaseAttention",
    "GraphAttention",
    "HistoryTopK",
    "ItemDropout",
    "ItemEmbedding",
    "LastPosition",
    "LinearAttention",
    "LocalAttention",
    "LowRankAttention",
    "MaskedMeanPooling",
    "MultiHeadAttention",
    "MultimodalFusion",
    "PaddingMask",
    "PositionEmbedding",
    "ScaledDotProductAttention",
    "SelfAttentionPooling",
    "SinusoidalPositionEmbedding",
    "StopGradient",
    "TargetAttention",
    "TopKAttention",
    "TransformerEncoderBlock",
    "TransitionPrior",
    "make_attention",
    "top_k_outputs",
]
