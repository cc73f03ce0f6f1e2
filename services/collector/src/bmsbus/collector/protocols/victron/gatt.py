"""Characteristic-level access for the SmartShunt: the CharLink interface (declared in links/base.py and
implemented by the BlueZ and ESPHome links) and `EmulatedCharLink`, its in-process twin for tests and demos.

`CharLink` = a Link that can also
- `read_char(uuid) -> bytes`: a GATT read of one characteristic,
- `write_char(uuid, data, response=False)`: a GATT write to one characteristic,
- `start_notify(uuid)`: subscribe to one more characteristic; its notifications arrive through the ordinary
  `receive()` as *tagged* chunks (4-byte big-endian UUID prefix + value, `links.gatt.char_tag`, the same
  bytes as `codec.tag`), so Driver.next_frame() and a codec assembler work unchanged.

A plain Link can still carry the same conversation in-band (what the emulator understands): `send(tag)` is a
read whose answer arrives tagged, `send(tag + value)` a write. The driver uses CharLink methods when the link
has them and falls back to the in-band form only on in-process links (`simulated`).
"""

from __future__ import annotations

from ...links.base import CharLink, LinkClosed, LinkError
from ...links.emulated import EmulatedLink
from . import codec

__all__ = ["CharLink", "EmulatedCharLink"]


class EmulatedCharLink(EmulatedLink):
    """EmulatedLink + the CharLink methods, over any emulator that speaks the tagged in-band form. As on a
    real link, only notifications of characteristics subscribed with `start_notify` reach `receive()`."""

    kind = "emulated"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.notifying: set[str] = set()
        self.writes: list[tuple[str, bytes]] = []

    def _check_open(self) -> None:
        if self._closed is not None:
            raise LinkClosed(self._closed)

    def _emit(self, frames: list[bytes]) -> None:
        tags = {codec.tag(codec.prefix_of(u)) for u in self.notifying}
        super()._emit([f for f in frames if f[: codec.TAG_LEN] in tags])

    async def read_char(self, uuid: str) -> bytes:
        self._check_open()
        prefix = codec.prefix_of(uuid)
        for reply in self.emulator.receive(codec.tag(prefix)):
            if reply[: codec.TAG_LEN] == codec.tag(prefix):
                return reply[codec.TAG_LEN :]
        raise LinkError(f"GATT read of {uuid} got no value")

    async def write_char(self, uuid: str, data: bytes, *, response: bool = False) -> None:
        self._check_open()
        self.writes.append((uuid, bytes(data)))
        self._emit(self.emulator.receive(codec.tag(codec.prefix_of(uuid), data)))

    async def start_notify(self, uuid: str) -> None:
        self._check_open()
        codec.prefix_of(uuid)  # a SmartShunt characteristic, or UsageError
        self.notifying.add(uuid)
