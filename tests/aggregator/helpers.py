"""Synthetic traces and config for the aggregator tests."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from bmsbus.aggregator.service import Aggregator
from bmsbus.shared.config import MqttConfig, parse_config
from bmsbus.shared.models import Sample

T0 = 1_700_000_000.0


def sample(bms: str, ts: float, seq: int, *, boot: str = "b1", **values: Any) -> Sample:
    return Sample(bms=bms, ts=ts, boot=boot, seq=seq, **values)


def trace(bms: str, power: Callable[[float], float | None], *, n: int, dt: float = 1.0, t0: float = T0,
          voltage: float = 50.0, boot: str = "b1", seq0: int = 0, **extra: Any) -> Iterator[Sample]:
    """Samples whose power follows power(t - t0) and current = power / voltage."""
    for i in range(n):
        t = i * dt
        p = power(t)
        values = dict(extra)
        if p is not None:
            values.update(power=p, current=p / voltage, voltage=voltage)
        yield sample(bms, t0 + t, seq0 + i, boot=boot, **values)


def write_config(tmp_path: Path, *, devices: list[str], groups: list[dict] | None = None,
                 **aggregator: Any) -> Path:
    cfg = {
        "site": "t",
        "devices": [{"alias": d, "type": "simulated"} for d in devices],
        "aggregator": {"state_dir": str(tmp_path / "state"), "groups": groups or [], **aggregator},
    }
    path = tmp_path / "bmsbus.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def close(a: float, b: float, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def make_aggregator(tmp_path: Path, mqtt: MqttConfig) -> Aggregator:
    """Packs a and b and their parallel group g, state in tmp_path, publishing every 0.1 s, on `mqtt`."""
    cfg = parse_config({
        "site": "t", "devices": [{"alias": a, "type": "simulated"} for a in ("a", "b")],
        "aggregator": {"state_dir": str(tmp_path / "state"), "publish_interval": 0.1, "reorder_window": 0.2,
                       "groups": [{"id": "g", "members": ["a", "b"]}]},
    })
    cfg.mqtt = mqtt
    return Aggregator(cfg)
