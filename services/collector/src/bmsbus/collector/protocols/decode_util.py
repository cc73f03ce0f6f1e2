"""The shared body of ProtocolEntry.decode functions (`bmsbus decode NAME HEX...`, the generic fuzzer)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..codec import Assembler, CodecError, DeviceInfo, Frame


def error_dict(err: CodecError) -> dict[str, Any]:
    return {"error": f"{type(err).__name__}: {err}"}


def decode_stream(chunks: Iterable[bytes], assembler: Assembler,
                  decode_one: Callable[[Frame], dict[str, Any]]) -> list[dict[str, Any]]:
    """Every frame of the chunk stream, decoded, and every CodecError in its place, in order."""
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        if chunk:
            assembler.feed(bytes(chunk))
        while True:
            try:
                frame = assembler.next_frame()
            except CodecError as err:
                out.append(error_dict(err))
                continue
            if frame is None:
                break
            try:
                out.append(decode_one(frame))
            except CodecError as err:
                out.append(error_dict(err))
    return out


def device_info_dict(info: DeviceInfo) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k in ("manufacturer", "model", "hw_version", "sw_version", "serial", "name")
                           if (v := getattr(info, k))}
    if info.extra:
        out["extra"] = dict(info.extra)
    return out
