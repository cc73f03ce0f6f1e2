"""SOK / ABC driver: C1 (status, MOS, temperatures), C2 (heater, cells), C4 (problem flags, optional)."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from ...codec import DeviceInfo, Frame, Reading
from ...driver import Driver
from . import codec


class SokDriver(Driver):
    """Read-only (no write command is documented). Charge/discharge MOS and heater are read-only switch
    states. Options: `cell_wait` (s, default 0.4): how long to keep collecting F4 cell frames after the
    first, since the cell count is not on the wire; `problem_timeout` (s, default 2): wait for the
    optional F9 reply."""

    protocol: ClassVar[str] = "sok"
    quantities: ClassVar[frozenset[str]] = frozenset({
        "voltage", "current", "soc", "charge", "design_capacity", "cycles", "cell_voltages", "temperatures",
        "switches", "problem_code"})
    switches: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        opts = self.options.options
        self.cell_wait = float(opts.get("cell_wait", 0.4))
        self.problem_timeout = float(opts.get("problem_timeout", 2.0))
        self.has_problem_flags = True

    def new_assembler(self) -> codec.SokAssembler:
        return codec.SokAssembler()

    async def _collect(self, command: int, request: bytes) -> list[Frame]:
        """Send `request` and gather its expected reply types (and any further F4 cell frames)."""
        wanted = set(codec.EXPECTED[command])
        frames: list[Frame] = []

        def accept(frame: Frame) -> bool:
            if frame.raw[0] != codec.REPLY_HEAD:
                return False  # an echo of our own request
            frames.append(frame)
            wanted.discard(int(frame.kind))
            return not wanted

        await self.transact(request, accept)
        if command == codec.CMD_CELLS:
            while frames[-1].kind == codec.T_CELLS and self._full(frames[-1]):
                try:
                    async with asyncio.timeout(self.cell_wait):
                        frame = await self.next_frame()
                except TimeoutError:
                    break
                if frame.kind != codec.T_CELLS:
                    break
                frames.append(frame)
        return frames

    @staticmethod
    def _full(frame: Frame) -> bool:
        return len(codec.decode_cells(frame.raw)) == codec.CELLS_PER_FRAME

    async def open(self) -> DeviceInfo:
        info = DeviceInfo(manufacturer="Chunguang Song", model="ABC-BMS")
        try:
            frames = await asyncio.wait_for(self._collect(codec.CMD_INFO, codec.REQUEST_INFO), self.problem_timeout)
            model = next(f for f in frames if f.kind == codec.T_MODEL)
            info.model = codec.decode_model(model.raw) or info.model
        except TimeoutError:
            self.log.debug("no F1 device-info reply")
        return info

    async def read(self) -> Reading:
        frames = await self._collect(codec.CMD_STATUS, codec.REQUEST_STATUS)
        frames += await self._collect(codec.CMD_CELLS, codec.REQUEST_CELLS)
        if self.has_problem_flags:
            try:
                frames.append(await self.transact(codec.REQUEST_PROBLEMS, lambda f: f.kind == codec.T_PROBLEMS,
                                                  timeout=self.problem_timeout))
            except TimeoutError:
                self.log.info("no F9 problem-flag reply; not asking again")
                self.has_problem_flags = False
        return codec.combine(frames)
