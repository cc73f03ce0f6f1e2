"""Cell states, alarms and their actions: webhooks, MQTT publishes, scripts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bmsbus.aggregator.actions import Actions, deliver, run_script
from bmsbus.aggregator.alarms import alarm_text
from bmsbus.aggregator.service import Aggregator
from bmsbus.shared.bus import Message
from bmsbus.shared.config import CellStateConfig, parse_config
from bmsbus.aggregator.cellstates import CellStates
from helpers import T0, sample


class Receiver:
    """A webhook receiver on loopback: records every JSON body; answers with the next queued status."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.bodies: list[dict] = []
        self.statuses = statuses or []
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        body = await reader.readexactly(length)
        self.bodies.append(json.loads(body))
        status = self.statuses.pop(0) if self.statuses else 200
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook?x=1"


def rule(**kw) -> CellStateConfig:
    return CellStateConfig(**{"name": "undervolt", "low": 3.0, "normal": 3.2, **kw})


@pytest.mark.parametrize(("low", "normal", "values", "transitions"), [
    # falling rule: low at <= 3.0, normal again at >= 3.2; the band between changes nothing
    (3.0, 3.2, [3.3, 3.1, 3.0, 3.05, 2.9, 3.15, 3.19, 3.2, 3.1, 2.99], [None, None, "low", None, None, None, None,
                                                                          "normal", None, "low"]),
    # first value already low fires; first value normal does not
    (3.0, 3.2, [2.9, 3.3], ["low", "normal"]),
    # rising rule (low above normal): e.g. cell_max
    (3.6, 3.45, [3.5, 3.6, 3.5, 3.45, 3.61], [None, "low", None, "normal", "low"]),
])
def test_hysteresis(low, normal, values, transitions) -> None:
    states = CellStates()
    r = rule(low=low, normal=normal)
    assert [states.update(r, "p", v) for v in values] == transitions


def test_alarm_texts() -> None:
    assert alarm_text("cell_overvoltage") == ("Cell overvoltage", "alarm")
    assert alarm_text("charge_mos_overtemperature_warning") == ("Charge MOSFET overtemperature (warning)", "warning")
    assert alarm_text("soc_low") == ("SoC low", "alarm")
    assert alarm_text("x") == ("X", "alarm")


def config(tmp_path: Path, url: str, **aggregator) -> object:
    return parse_config({
        "site": "t", "devices": [{"alias": "p", "type": "simulated"}],
        "aggregator": {"state_dir": str(tmp_path / "state"), **aggregator,
                       "alarms": {"webhook": {"url": url, "timeout": 2, "retries": 0}},
                       "cell_states": [{"name": "undervolt", "low": 3.0, "normal": 3.2, "on_low": [
                           {"webhook": {"url": url, "timeout": 2}},
                           {"publish": "home/{battery}/undervolt", "payload": "{state} {value}"},
                           {"switch": "discharge", "value": False}],
                           "on_normal": [{"webhook": {"url": url}}, {"switch": "discharge", "value": True}]}]},
    }, "test.yaml")


async def test_a_webhook_receiver_sees_exactly_one_call_per_transition(tmp_path: Path) -> None:
    async with Receiver() as rx:
        agg = Aggregator(config(tmp_path, rx.url), clock=lambda: T0 + 1000)
        agg.restore()
        cells = [3.3, 3.1, 3.0, 3.05, 2.9, 2.95, 3.15, 3.21, 3.25, 3.1, 2.99, 3.3]  # low, normal, low, normal
        async with Actions(scripts_dir=None, script_timeout=5) as actions:
            agg.actions = actions
            for i, c in enumerate(cells):
                s = sample("p", T0 + i, i, cell_voltages=[c, 3.3], alarms=["cell_undervoltage"] if c < 3.0 else [])
                agg.handle(Message("bmsbus/v1/t/bms/p/sample", s.to_json(), False))
            deadline = time.monotonic() + 10
            while len(rx.bodies) < 6 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # nothing more comes
        cell_events = [(b["state"], b["value"]) for b in rx.bodies if b["event"] == "cell_state"]
        assert sorted(cell_events) == sorted([("low", 3.0), ("normal", 3.21), ("low", 2.99), ("normal", 3.3)])
        alarm_events = [b for b in rx.bodies if b["event"] == "alarm"]
        # the BMS alarm became active twice (2.9 and 2.99 are its two episodes)
        assert [(a["code"], a["text"], a["battery"]) for a in alarm_events] == [
            ("cell_undervoltage", "Cell undervoltage", "p")] * 2
        published = [(t, p) for t, p, _ in agg.bus_out if t.startswith("home/")]
        assert published == [("home/p/undervolt", b"low 3"), ("home/p/undervolt", b"low 2.99")]
        commands = [json.loads(p) for t, p, _ in agg.bus_out if t == "bmsbus/v1/t/bms/p/cmd"]
        assert [(c["switch"], c["value"]) for c in commands] == [("discharge", False), ("discharge", True)] * 2
        assert all(c["expires"] > c["issued"] and c["id"].startswith("agg-") for c in commands)
        assert agg.engine.state("p", T0 + 1000).cell_min == 3.3


async def test_webhook_retries_on_5xx_and_gives_up_on_4xx() -> None:
    async with Receiver([503, 200]) as rx:
        assert await deliver(rx.url, {"n": 1}, timeout=2, retries=2, first_delay=0.01)
        assert len(rx.bodies) == 2
    async with Receiver([404, 200]) as rx:
        assert not await deliver(rx.url, {"n": 1}, timeout=2, retries=2, first_delay=0.01)
        assert len(rx.bodies) == 1
    # nothing listening: retried, then False, never an exception
    assert not await deliver("http://127.0.0.1:9/x", {}, timeout=0.5, retries=1, first_delay=0.01)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_scripts_run_without_a_shell_and_time_out_cleanly(tmp_path: Path) -> None:
    ok = tmp_path / "undervolt_low_10_env"
    ok.write_text("#!/bin/sh\nenv > \"$(dirname \"$0\")/env.out\"\n")
    slow = tmp_path / "undervolt_low_20_slow"
    slow.write_text("#!/bin/sh\necho $$ > pid.out\nsleep 30 &\necho $! > child.out\nwait\n")
    other = tmp_path / "undervolt_normal_x"
    other.write_text("#!/bin/sh\ntouch normal.out\n")
    not_exec = tmp_path / "undervolt_low_30_notexec"
    not_exec.write_text("#!/bin/sh\ntouch notexec.out\n")
    for p in (ok, slow, other):
        p.chmod(0o755)
    hostile = "p; touch pwned.out $(touch pwned2.out)"  # never reaches a shell as code
    assert await run_script(ok, {"BMSBUS_BATTERY": hostile}, 5) == 0
    env = dict(line.split("=", 1) for line in (tmp_path / "env.out").read_text().splitlines() if "=" in line)
    assert env["BMSBUS_BATTERY"] == hostile and "HOME" not in env
    assert not (tmp_path / "pwned.out").exists() and not (tmp_path / "pwned2.out").exists()

    started = time.monotonic()
    async with Actions(scripts_dir=tmp_path, script_timeout=0.5) as actions:
        actions.scripts("undervolt_low_", {"BMSBUS_STATE": "low"})
    assert time.monotonic() - started < 5
    assert actions.done["script"] == 1 and actions.failed["script"] == 1  # the slow one was killed
    pid, child = int((tmp_path / "pid.out").read_text()), int((tmp_path / "child.out").read_text())
    await asyncio.sleep(0.1)
    assert not alive(pid) and not alive(child)  # the whole process group
    assert not (tmp_path / "normal.out").exists() and not (tmp_path / "notexec.out").exists()


async def test_cell_state_runs_the_matching_scripts(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    s = scripts / "undervolt_low_mark"
    s.write_text("#!/bin/sh\necho \"$BMSBUS_BATTERY $BMSBUS_VALUE\" >> marks.out\n")
    s.chmod(0o755)
    cfg = parse_config({"devices": [{"alias": "p", "type": "simulated"}], "aggregator": {
        "state_dir": str(tmp_path / "state"), "scripts_dir": str(scripts),
        "cell_states": [{"name": "undervolt", "low": 3.0, "normal": 3.2}]}})
    agg = Aggregator(cfg)
    agg.restore()
    async with Actions(scripts_dir=scripts, script_timeout=5) as actions:
        agg.actions = actions
        for i, c in enumerate([3.3, 2.9, 2.8, 3.3]):
            agg.handle(Message("bmsbus/v1/home/bms/p/sample", sample("p", T0 + i, i, cell_voltages=[c]).to_json(),
                               False))
    assert (scripts / "marks.out").read_text() == "p 2.9\n"


def test_check_reports_bad_algorithms_and_unknown_batteries(tmp_path: Path) -> None:
    from bmsbus.aggregator.service import check

    cfg = parse_config({"devices": [{"alias": "p", "type": "simulated", "algorithm": "soc 80% 90%"}],
                        "aggregator": {"scripts_dir": str(tmp_path / "nope"),
                                       "cell_states": [{"name": "x", "low": 1, "normal": 2, "batteries": ["q"]}]}})
    problems = check(cfg)
    assert any(p.startswith("devices[0].algorithm: ") and "START (90.0%) must not be above STOP" in p
               for p in problems)
    assert any(p.startswith("aggregator.cell_states[0].batteries: unknown ids ['q']") for p in problems)
    assert any(p.startswith("aggregator.scripts_dir: ") for p in problems)
