"""The shared body of ProtocolEntry.decode functions (`bmsbus decode NAME HEX...`, the generic fuzzer)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..codec import Assembler, CodecError, DeviceInfo, Frame, drain


def error_dict(err: CodecError) -> dict[str, Any]:
    return {"error": f"{type(err).__name__}: {err}"}


def decode_stream(chunks: Iterable[bytes], assembler: Assembler,
                  decode_one: Callable[[Frame], dict[str, Any]], *, finish: bool = False) -> list[dict[str, Any]]:
    """Every frame of the chunk stream, decoded, and every CodecError in its place, in order.
    `finish`: the input is complete, so bytes left in the assembler are reported as a truncated frame
    (the assembler's `finish()`)."""
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        for item in drain(assembler, bytes(chunk)):
            if isinstance(item, CodecError):
                out.append(error_dict(item))
                continue
            try:
                out.append(decode_one(item))
            except CodecError as err:
                out.append(error_dict(err))
    if finish:
        try:
            assembler.finish()  # type: ignore[attr-defined]
        except CodecError as err:
            out.append(error_dict(err))
    return out


def device_info_dict(info: DeviceInfo) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k in ("manufacturer", "model", "hw_version", "sw_version", "serial", "name")
                           if (v := getattr(info, k))}
    if info.extra:
        out["extra"] = dict(info.extra)
    return out
