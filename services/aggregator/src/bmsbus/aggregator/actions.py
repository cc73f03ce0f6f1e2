"""Carrying out actions that leave the bus: HTTP webhooks and local scripts.

- Webhooks: a JSON POST with the standard library's asyncio streams (no HTTP dependency), a timeout per
  attempt and a few retries with backoff on connection errors and 5xx answers. A 4xx is final.
- Scripts: every executable file in `scripts_dir` whose name starts with `<rule>_<state>_`, run directly
  (no shell), stdin closed, with a minimal environment carrying the event (BMSBUS_* variables: ids match
  [A-Za-z0-9_-], numbers are formatted by us, so nothing from the bus is ever interpreted by a shell).
  A script running longer than `script_timeout` is killed with its whole process group.

All of it runs in the Actions' own TaskGroup, bounded in concurrency, so a slow webhook never delays
samples and nothing is fire-and-forget.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
from collections import Counter
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

log = logging.getLogger("bmsbus.aggregator.actions")

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


class WebhookError(Exception):
    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


async def post_json(url: str, body: dict[str, Any], *, timeout: float, headers: dict[str, str] | None = None) -> int:
    """POST `body` as JSON; returns the HTTP status. Raises WebhookError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"not an http(s) URL: {url!r}", retry=False)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    data = json.dumps(body, separators=(",", ":")).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/json",
            f"Content-Length: {len(data)}", "Connection: close", "User-Agent: bmsbus-aggregator"]
    for k, v in (headers or {}).items():
        if any(c in k + v for c in "\r\n"):
            raise WebhookError(f"header {k!r} contains a line break", retry=False)
        head.append(f"{k}: {v}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + data
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                parts.hostname, port, ssl=ssl.create_default_context() if parts.scheme == "https" else None)
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
    except TimeoutError:
        raise WebhookError(f"no answer within {timeout:g} s", retry=True) from None
    except OSError as exc:
        raise WebhookError(f"{type(exc).__name__}: {exc}", retry=True) from None
    finally:
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        raise WebhookError(f"not an HTTP answer: {status_line[:40]!r}", retry=True) from None
    if status >= 500:
        raise WebhookError(f"HTTP {status}", retry=True)
    if status >= 400:
        raise WebhookError(f"HTTP {status}", retry=False)
    return status


async def deliver(url: str, body: dict[str, Any], *, timeout: float, retries: int,
                  headers: dict[str, str] | None = None, first_delay: float = 1.0) -> bool:
    delay = first_delay
    for attempt in range(retries + 1):
        try:
            await post_json(url, body, timeout=timeout, headers=headers)
            return True
        except WebhookError as exc:
            last = attempt == retries or not exc.retry
            (log.warning if last else log.info)("webhook %s attempt %d/%d: %s%s", url, attempt + 1, retries + 1, exc,
                                                "" if last else f"; retrying in {delay:g} s")
            if last:
                return False
            await asyncio.sleep(delay)
            delay *= 2
    return False


async def run_script(path: Path, env: dict[str, str], timeout: float) -> int | None:
    """Run one script without a shell; its exit code, or None if it had to be killed."""
    proc = await asyncio.create_subprocess_exec(
        str(path), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={"PATH": SAFE_PATH, **env}, cwd=str(path.parent),
        start_new_session=True)  # its own process group: a timeout kills its children too
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        log.warning("script %s still running after %g s: killed", path.name, timeout)
        return None
    finally:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await asyncio.shield(proc.wait())
    text = out.decode(errors="replace").strip()
    level = logging.INFO if proc.returncode == 0 else logging.WARNING
    log.log(level, "script %s exited %s%s", path.name, proc.returncode, f": {text[-500:]}" if text else "")
    return proc.returncode


def scripts_for(folder: Path, prefix: str) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        log.warning("scripts_dir %s unreadable: %s", folder, exc)
        return []
    return [p for p in entries if p.name.startswith(prefix) and p.is_file() and os.access(p, os.X_OK)]


class Actions:
    """Runs webhooks and scripts in the background of the service, at most `limit` at a time."""

    def __init__(self, *, scripts_dir: Path | None, script_timeout: float, limit: int = 8) -> None:
        self.scripts_dir = scripts_dir
        self.script_timeout = script_timeout
        self._sem = asyncio.Semaphore(limit)
        self._tg = asyncio.TaskGroup()
        self.done = Counter[str]()
        self.failed = Counter[str]()
        self.dropped = 0
        self._running = 0

    async def __aenter__(self) -> Self:
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._tg.__aexit__(*exc)

    def webhook(self, url: str, data: dict[str, Any]) -> None:
        self._spawn("webhook", deliver(url, data["body"], timeout=data["timeout"], retries=data["retries"],
                                       headers=data.get("headers")))

    def scripts(self, prefix: str, env: dict[str, str]) -> None:
        if self.scripts_dir is None:
            return
        for path in scripts_for(self.scripts_dir, prefix):
            self._spawn("script", run_script(path, env, self.script_timeout))

    def _spawn(self, kind: str, coro: Any) -> None:
        if self._running >= 1000:  # a flood of transitions must not grow without bound
            coro.close()
            self.dropped += 1
            log.warning("too many actions pending; dropped a %s", kind)
            return
        self._running += 1
        self._tg.create_task(self._guarded(kind, coro))

    async def _guarded(self, kind: str, coro: Any) -> None:
        try:
            async with self._sem:
                ok = await coro
            if ok is False or (kind == "script" and ok != 0):
                self.failed[kind] += 1
            else:
                self.done[kind] += 1
        except (OSError, ValueError) as exc:
            self.failed[kind] += 1
            log.warning("%s failed: %s", kind, exc)
        finally:
            self._running -= 1
