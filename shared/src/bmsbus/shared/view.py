"""A live terminal view of every pack and group, for `bmsbus stack --view` and `make demo`.

It is an ordinary bus consumer: it reads `bms/+/sample`, `bms/+/link` and `battery/+/state`, and
redraws once a second. On a non-terminal stdout it prints one line per pack every 5 seconds instead.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field

from .bus import Bus, Inbox, run_connected
from .config import Config
from .models import BatteryState, Link, Sample
from .topics import Topics


@dataclass
class Row:
    sample: Sample | None = None
    state: BatteryState | None = None
    link: Link | None = None
    samples_seen: int = 0
    last_seen: float = field(default_factory=time.time)


def _fmt(v: float | None, spec: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


def render(rows: dict[str, Row], now: float) -> list[str]:
    header = (f"{'battery':<14} {'SoC':>6} {'V':>7} {'A':>8} {'W':>8} {'cell min':>9} {'cell max':>9} "
              f"{'delta':>7} {'in kWh':>8} {'out kWh':>8}  link")
    lines = [header, "-" * len(header)]
    for name in sorted(rows, key=lambda n: (rows[n].state is not None and rows[n].state.kind == "group", n)):
        r = rows[name]
        s, st = r.sample, r.state
        src = st or s
        soc = (st.soc if st and st.soc is not None else s.soc if s else None)
        link = r.link.state if r.link else ("group" if st and st.kind == "group" else "-")
        if st and st.stale:
            link += " STALE"
        lines.append(
            f"{name:<14} {_fmt(soc, '.1f', '%'):>6} {_fmt(src.voltage if src else None, '.2f'):>7} "
            f"{_fmt(src.current if src else None, '+.2f'):>8} {_fmt(src.power if src else None, '+.0f'):>8} "
            f"{_fmt(st.cell_min if st else None, '.3f'):>9} {_fmt(st.cell_max if st else None, '.3f'):>9} "
            f"{_fmt(st.cell_delta * 1000 if st and st.cell_delta is not None else None, '.0f', 'mV'):>7} "
            f"{_fmt(st.energy_in_kwh if st else None, '.4f'):>8} {_fmt(st.energy_out_kwh if st else None, '.4f'):>8}"
            f"  {link}")
    lines.append("")
    lines.append(f"{time.strftime('%H:%M:%S', time.localtime(now))}  Ctrl-C stops everything.")
    return lines


async def run_view(cfg: Config, out=None) -> None:
    out = out or sys.stdout
    topics = Topics(cfg.topic_root, cfg.site)
    inbox = Inbox(topics, "view")
    rows: dict[str, Row] = {}
    tty = out.isatty()

    async def consume(bus: Bus) -> None:
        await bus.subscribe(topics.all_of("sample"), topics.all_of("state"), topics.all_of("link"), qos=0)
        async for msg in bus.messages():
            decoded = inbox.decode(msg)
            if decoded is None:
                continue
            ref, model = decoded
            row = rows.setdefault(ref.entity, Row())
            row.last_seen = time.time()
            if isinstance(model, Sample):
                row.sample, row.samples_seen = model, row.samples_seen + 1
            elif isinstance(model, BatteryState):
                row.state = model
            elif isinstance(model, Link):
                row.link = model

    async def draw() -> None:
        while True:
            await asyncio.sleep(1.0 if tty else 5.0)
            lines = render(rows, time.time())
            if tty:
                out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
            else:
                out.write("\n".join(lines[2:-2]) + "\n")
            out.flush()

    def connect() -> Bus:
        return Bus(cfg.mqtt, client_id=f"bmsbus-view-{time.monotonic_ns()}")  # type: ignore[arg-type]

    async with asyncio.TaskGroup() as tg:
        tg.create_task(run_connected("view", connect, consume))
        tg.create_task(draw())
