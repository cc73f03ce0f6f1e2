"""ANT driver (7E A1 protocol over BLE): device info at open, one status request per read, func 0x51
register writes for the charge/discharge/balance switches.

Options: `secret` for units that want the optional authentication (func 0x23, sent once at open);
`swap_mos_status: true` reads byte 46 as the discharge and 47 as the charge MOS status (batmon's order;
protocols.md §7.2 leaves the order open, the default follows aiobmsble and esphome-ant-bms).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ...codec import DeviceInfo, Reading, UsageError
from ...driver import Driver
from . import codec as ant

OPTIONAL_TIMEOUT = 3.0


class AntDriver(Driver):
    protocol: ClassVar[str] = "ant"
    quantities = frozenset({"voltage", "current", "power", "soc", "soh", "charge", "design_capacity",
                            "cycle_charge", "cell_voltages", "temperatures", "mos_temperature", "balancing",
                            "switches", "alarms", "problem_code", "uptime"})
    switches = ("charge", "discharge", "balance")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        opts = self.options.options
        secret = opts.get("secret")
        self.secret = None if secret in (None, "") else str(secret)
        self.swap_mos = bool(opts.get("swap_mos_status", False))

    def new_assembler(self) -> ant.AntAssembler:
        return ant.AntAssembler()

    async def open(self) -> DeviceInfo:
        if self.secret is not None:
            await self.link.send(ant.build_auth(self.secret))  # no reply is documented
        try:
            frame = await self.transact(ant.build_device_info_request(),
                                        lambda f: f.kind == ant.REPLY_DEVICE_INFO,
                                        min(OPTIONAL_TIMEOUT, self.options.request_timeout))
        except TimeoutError:
            self.log.info("ANT sent no device info")
            return DeviceInfo(manufacturer="ANT")
        return ant.decode_device_info(frame)

    async def read(self) -> Reading:
        frame = await self.transact(ant.build_status_request(), lambda f: f.kind == ant.REPLY_STATUS)
        return ant.decode_status(frame, swap_mos=self.swap_mos)

    async def set_switch(self, name: str, on: bool) -> None:
        if name not in self.switches:
            raise UsageError(f"{self.protocol} cannot set switch {name!r}")
        # The write's acknowledgement (func 0x61) is undocumented; the status read-back is the check.
        await self.link.send(ant.build_switch(name, on))
        state = (await self.read())["switches"]
        if state.get(name) != on:
            self.log.warning("ANT %s is %s after switching it %s", name, "on" if state.get(name) else "off",
                             "on" if on else "off")
