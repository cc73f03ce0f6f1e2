"""Raw capture, replay and probe discovery (no radio); `scan`/`snoop` against BlueZ are in test_ble.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bmsbus.collector import protocols
from bmsbus.collector.diag import Capture, CaptureLink, first_request, probe_table, read_capture, replay
from bmsbus.collector.driver import DriverOptions
from bmsbus.collector.emulation.base import make_pack
from bmsbus.collector.links.emulated import EmulatedLink
from bmsbus.shared.cli import main as bmsbus


async def record_jk(directory: Path, *, max_bytes: int = 5_000_000, backups: int = 3, reads: int = 2) -> Capture:
    entry = protocols.get("jk")
    assert entry.emulator is not None
    capture = Capture(directory, "jk_garage", meta={"type": "jk", "protocol": "jk", "transport": "emulated"},
                      max_bytes=max_bytes, backups=backups)
    with capture:
        async with CaptureLink(EmulatedLink(entry.emulator(make_pack(cells=16, seed=7)), mtu=20), capture) as link:
            driver = capture.attach(entry.driver(link, DriverOptions()))
            await driver.open()
            for _ in range(reads):
                await driver.read()
    return capture


async def test_capture_then_replay_decodes_the_same_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = await record_jk(tmp_path)
    meta, records = read_capture([capture.path])
    assert meta["device"] == "jk_garage" and meta["type"] == "jk"
    assert {d for _, d, _ in records} == {"rx", "tx"}
    assert all(len(c) <= 20 for _, d, c in records if d == "rx")  # BLE-sized chunks, as received
    assert bytes.fromhex("aa5590eb97") == next(c for _, d, c in records if d == "tx")[:5]

    assert bmsbus(["replay", str(capture.path)]) == 0  # the type comes from the capture header
    out = json.loads(capsys.readouterr().out)
    assert out["type"] == "jk"
    cells = [f for f in out["frames"] if "cell_voltages" in f]
    assert cells and cells[0]["cell_voltages"] == pytest.approx(make_pack(cells=16, seed=7).cell_voltages, abs=0.002)


async def test_capture_rotates_by_size_and_replays_across_files(tmp_path: Path) -> None:
    capture = await record_jk(tmp_path, max_bytes=1500, backups=2, reads=2)
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["jk_garage.jsonl", "jk_garage.jsonl.1", "jk_garage.jsonl.2"]
    assert all(f.stat().st_size < 1500 + 200 for f in files)
    for f in files:  # every file starts with the header, so each one can be replayed alone
        assert "capture" in json.loads(f.read_text().splitlines()[0])
    name, frames = replay([tmp_path / "jk_garage.jsonl.2", tmp_path / "jk_garage.jsonl.1", capture.path], "jk")
    assert name == "jk" and frames


def test_replay_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"t": 1, "dir": "rx", "hex": "00"}\n')
    assert bmsbus(["replay", str(bad)]) == 2
    assert "pass --type" in capsys.readouterr().err
    assert bmsbus(["replay", str(bad), "--type", "nope"]) == 2
    assert "unknown BMS type" in capsys.readouterr().err


async def test_first_request_is_taken_from_the_driver() -> None:
    jk = await first_request(protocols.get("jk"))
    assert jk is not None and jk[:5] == bytes.fromhex("aa5590eb97") and len(jk) == 20
    table = await probe_table(protocols.REGISTRY.values())
    jk_group = next(names for key, names in table.items() if key[4] == jk)
    assert {"jk", "jk_24s", "jk_32s", "jk04"} <= {e.name for e in jk_group}
