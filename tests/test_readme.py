"""The README's Python blocks run as written (a fence marked `python fragment` is excluded:
it continues the reader's own session)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_quick_start_runs(capsys):
    assert BLOCKS, "README has no python block"
    exec(compile(BLOCKS[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "ndcg@10" in out


@pytest.mark.parametrize("index", range(1, len(BLOCKS)))
def test_every_other_block_runs(index):
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})
