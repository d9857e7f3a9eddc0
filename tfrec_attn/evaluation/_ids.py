"""Item-id conventions shared with `tfrec_attn.data`.

Ids are int64; `PAD_ID` pads histories, `OOV_ID` stands for unknown items, and real items are
`FIRST_ITEM_ID .. vocab_size - 1`. Neither padding nor OOV is ever a candidate or a recommendation.
Kept here (not imported from `tfrec_attn.data`) so evaluation stays importable with numpy alone.
"""

PAD_ID = 0
OOV_ID = 1
FIRST_ITEM_ID = 2
