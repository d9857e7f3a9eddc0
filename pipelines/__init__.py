"""End-to-end pipelines composed from tfrec_attn's public API (thin: no model logic here)."""
