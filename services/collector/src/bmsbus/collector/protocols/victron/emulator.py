"""A Victron SmartShunt: characteristic values from a PackState, keep-alive-gated notifications.

Tagged in-band form (codec.py): `receive(tag)` answers a read with `[tag + value]`; `receive(tag + value)` is a
write (the keep-alive sets how long the shunt keeps notifying). `tick(now)` emits tagged notifications of the
values that changed, only while the keep-alive has not expired — as the real shunt goes quiet without it.

`SERVICE` and `GATT` describe the shunt's GATT table (UUID, properties) for fake peripherals that serve this
emulator characteristic by characteristic (the tests' BlueZ peripheral and ESPHome proxy): a GATT read of a
characteristic is `receive(tag)`, a write `receive(tag + value)`, and each tagged frame of `tick()` is a
notification of the characteristic its tag names.
"""

from __future__ import annotations

import random
from typing import ClassVar

from ...emulation.base import Faults, PackState, apply_faults
from . import codec


class VictronEmulator:
    SERVICE: ClassVar[str] = codec.SERVICE
    GATT: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = (
        *((c.uuid, ("read", "notify")) for c in codec.VALUES),
        (codec.KEEPALIVE.uuid, ("write", "write-without-response")),
    )

    def __init__(self, state: PackState, *, seed: int = 0) -> None:
        self.state = state
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.now = 0.0
        self.keepalive_until = -1.0
        self.keepalive_writes = 0
        self._keepalive_ms: int | None = None  # anchored at the next tick (the only clock we get)
        self.soc_available = True
        self._last_notified: dict[int, bytes] = {}

    def value(self, spec: codec.CharSpec) -> bytes:
        s = self.state
        if spec is codec.VOLTAGE:
            return codec.encode_value(spec, s.voltage)
        if spec is codec.CURRENT:
            return codec.encode_value(spec, s.current)
        if spec is codec.POWER:
            return codec.encode_value(spec, s.power)
        if spec is codec.CONSUMED:
            return codec.encode_value(spec, -(s.capacity - s.charge))
        if spec is codec.SOC:
            return codec.encode_value(spec, s.soc) if self.soc_available else codec.na_value(spec)
        return b""

    def receive(self, data: bytes) -> list[bytes]:
        if len(data) < codec.TAG_LEN:
            return []
        prefix = int.from_bytes(data[: codec.TAG_LEN], "big")
        spec = codec.BY_PREFIX.get(prefix)
        if spec is None:
            return []
        payload = data[codec.TAG_LEN :]
        if not payload:  # a read
            return apply_faults([codec.tag(spec, self.value(spec))], self.faults, self.rng)
        if spec is codec.KEEPALIVE and len(payload) == spec.size:
            self.keepalive_writes += 1
            self._keepalive_ms = int.from_bytes(payload, "little")
        return []

    def tick(self, now: float) -> list[bytes]:
        self.now = now
        if self._keepalive_ms is not None:
            self.keepalive_until = now + self._keepalive_ms / 1000
            self._keepalive_ms = None
        if now > self.keepalive_until:
            return []
        out = []
        for spec in codec.VALUES:
            v = self.value(spec)
            if self._last_notified.get(spec.prefix) != v:
                self._last_notified[spec.prefix] = v
                out.append(codec.tag(spec, v))
        return apply_faults(out, self.faults, self.rng)
