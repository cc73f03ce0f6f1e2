"""docs/topics.md is the contract: every topic in the tree is documented, and every example parses."""

from __future__ import annotations

import re
from pathlib import Path

from bmsbus.shared.models import parse
from bmsbus.shared.topics import _LAYOUT, MODEL_OF_KIND

DOC = Path(__file__).resolve().parents[2] / "docs" / "topics.md"


def sections() -> dict[str, str]:
    text = DOC.read_text()
    parts = re.split(r"^## `([^`]+)`\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_topic_kind_has_a_section_with_an_example_that_parses() -> None:
    docs = sections()
    for kind, (branch, suffix) in _LAYOUT.items():
        placeholder = {"collector": "<collector>", "bms": "<bms>", "battery": "<id>"}[branch]
        title = f"{branch}/{placeholder}/{suffix}"
        assert title in docs, f"docs/topics.md has no section for {title}"
        blocks = re.findall(r"```(json|text)\n(.*?)```", docs[title], flags=re.S)
        assert blocks, f"{title}: no example payload"
        lang, body = blocks[0]
        if kind == "status":
            assert body.strip() in ("online", "offline")
        else:
            assert lang == "json"
            parse(MODEL_OF_KIND[kind], body)  # raises BadMessage if the example is wrong
