"""The fenced code blocks of a documentation page, for the tests that run every one of them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).parents[1] / "docs"
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)(?P<options>[^\n]*)\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its `title="…"` (a file name, where the page says where it goes), its code."""

    page: str
    line: int
    lang: str
    title: str | None
    code: str


def blocks(page: str) -> list[Block]:
    """Every fenced block of `docs/<page>`, in order, its code dedented to the fence."""
    text = (DOCS / page).read_text()
    found = []
    for match in _FENCE.finditer(text):
        title = re.search(r'title="([^"]+)"', match["options"])
        indent = len(match["indent"])
        code = "".join(line[indent:] for line in match["code"].splitlines(keepends=True))
        found.append(Block(page, text.count("\n", 0, match.start()) + 1, match["lang"], title and title.group(1), code))
    return found
