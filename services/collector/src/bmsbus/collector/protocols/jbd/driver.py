"""JBD driver: 0x05 model at open, 0x03 basic info + 0x04 cells per read, 0xE1 MOS writes.

Options: `password` (or `secret`, as the aiobmsble types call it): the app password, for firmware that
wants the FF AA exchange before anything else (§6.6).

0xE1 carries both MOS states in one byte, so a write of one switch must restate the other. The other MOS
is kept off only if 0xE1 is what holds it off: we commanded it off in this session, or (before any
command) its FET is off while protection bit 12 "software MOS lock" is set. A MOS that is off because of
a protection is left to the BMS, unlike batmon, which copies the FET state and would lock it off.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ...codec import DeviceInfo, Frame, Reading, UnsupportedFrame, UsageError, merge
from ...driver import Driver
from . import codec as jbd


class JbdDriver(Driver):
    protocol: ClassVar[str] = "jbd"
    quantities = frozenset({"voltage", "current", "soc", "charge", "design_capacity", "cycles", "cell_voltages",
                            "temperatures", "balancing", "switches", "alarms", "problem_code"})
    switches = ("charge", "discharge")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        opts = self.options.options
        password = opts.get("password", opts.get("secret"))  # `secret`, as for the aiobmsble types
        self.password = None if password in (None, "") else str(password)
        self.fet: dict[str, bool] = {}
        self.locked = False
        self.commanded: dict[str, bool] = {}

    def new_assembler(self) -> jbd.JbdAssembler:
        return jbd.JbdAssembler()

    async def _ask(self, register: int, data: bytes = b"", *, write: bool = False,
                   timeout: float | None = None) -> Frame:
        frame = await self.transact(jbd.build_request(register, data, write=write),
                                    lambda f: f.kind == register, timeout)
        if jbd.status(frame) != jbd.STATUS_OK:
            raise UnsupportedFrame(f"JBD answered register {register:#04x} with error status {jbd.status(frame):#04x}")
        return frame

    def _remember(self, basic: Reading) -> None:
        self.fet = dict(basic["switches"])
        self.locked = bool(basic["problem_code"] >> jbd.LOCK_BIT & 1)
        if not self.locked:
            self.commanded.clear()  # nothing is held off by 0xE1 (e.g. after a BMS restart)

    async def _basic(self) -> tuple[Frame, Reading]:
        frame = await self._ask(jbd.REG_BASIC)
        reading = jbd.decode_basic(frame)
        self._remember(reading)
        return frame, reading

    async def open(self) -> DeviceInfo:
        if self.password is not None:
            reply = await self.transact(jbd.build_auth(self.password), lambda f: f.kind == jbd.KIND_AUTH)
            if jbd.auth_result(reply)[1] != 0:
                raise UsageError("the JBD BMS rejected the configured password")
        frame, _ = await self._basic()
        info = jbd.basic_info(frame)
        info.model = jbd.decode_version(await self._ask(jbd.REG_VERSION)) or None
        return info

    async def read(self) -> Reading:
        _, basic = await self._basic()
        cells = jbd.decode_cells(await self._ask(jbd.REG_CELLS))
        return merge(basic, cells)

    def held_off(self, name: str) -> bool:
        """Is `name` held off by 0xE1 (and must stay off when we write the other MOS)?"""
        if not self.locked and not self.commanded:
            return False
        if name in self.commanded:
            return not self.commanded[name]
        return self.locked and not self.fet.get(name, True)

    async def set_switch(self, name: str, on: bool) -> None:
        if name not in self.switches:
            raise UsageError(f"{self.protocol} cannot set switch {name!r}")
        if not self.fet:
            await self._basic()
        wanted = {other: not self.held_off(other) for other in self.switches}
        wanted[name] = on
        await self._ask(jbd.REG_MOS, jbd.mos_data(wanted["charge"], wanted["discharge"]), write=True)
        self.commanded = dict(wanted)
        _, basic = await self._basic()  # read back
        if basic["switches"].get(name) != on:
            self.log.warning("JBD %s MOS is %s after switching it %s (a protection may hold it)", name,
                             "on" if basic["switches"].get(name) else "off", "on" if on else "off")
