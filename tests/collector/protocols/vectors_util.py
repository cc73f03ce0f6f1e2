"""The captured vectors (shared/vectors/*.json) and the helpers every codec test uses to read them.

One place for what parta_util.py (Daly, JBD, ANT), partb_util.py (Supervolt, SOK, LiTime, Victron, noname
Modbus, Basen, PACE) and the JK tests each had a copy of: where the vectors are, loading a file, selecting
entries by protocol / bms type / plugin, turning `frames_hex` into chunks, and splitting chunks into frames
and codec errors. Every call parses the file afresh (no shared, mutable cache between tests).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bmsbus.collector.codec import Assembler, CodecError, Frame, drain

VECTORS = Path("/work/shared/vectors")
if not VECTORS.exists():  # the repo layout: <root>/main and <root>/shared
    VECTORS = Path(__file__).resolve().parents[4] / "shared" / "vectors"


def load(name: str) -> list[dict[str, Any]]:
    return json.loads((VECTORS / name).read_text())


def proto(protocol: str) -> list[dict[str, Any]]:
    """protocols.json entries of one protocol."""
    return [e for e in load("protocols.json") if e["protocol"] == protocol]


def batmon(bms_type: str, direction: str | None = None) -> list[dict[str, Any]]:
    """batmon-ha.json entries of one bms type (and direction)."""
    return [e for e in load("batmon-ha.json")
            if e["bms_type"] == bms_type and (direction is None or e["direction"] == direction)]


def aio(bms: str) -> list[dict[str, Any]]:
    """aiobmsble.json entries of one plugin."""
    return [e for e in load("aiobmsble.json") if e["bms"] == bms]


def hexes(entry: dict[str, Any], *, skip_empty: bool = False) -> list[bytes]:
    """An entry's `frames_hex` as chunks; `skip_empty` drops the empty ones (aiobmsble's unanswered requests)."""
    return [bytes.fromhex(c) for c in entry["frames_hex"] if c or not skip_empty]


def split_frames(asm: Assembler, chunks: Iterable[bytes]) -> tuple[list[Frame], list[CodecError]]:
    """Feed `chunks` one by one: the frames and the CodecErrors the assembler gives, each in order."""
    got: list[Frame] = []
    errors: list[CodecError] = []
    for chunk in chunks:
        for item in drain(asm, chunk):
            if isinstance(item, CodecError):
                errors.append(item)
            else:
                got.append(item)
    return got, errors
