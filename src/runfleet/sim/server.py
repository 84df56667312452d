"""Serve the simulator over real HTTP on loopback, from tests, benchmarks or the CLI."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from .app import SimApp
from .scenario import Scenario, load_scenario
from .wire import DroppedConnection

__all__ = ["SimServer", "announced_url", "run", "serve", "serve_asgi", "sim_command"]


class _HideDrops(logging.Filter):
    """Keep injected connection drops out of uvicorn's error log: they are the point."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DroppedConnection)


_HIDE_DROPS = _HideDrops()


@dataclass(frozen=True)
class SimServer:
    """A running simulator: where to point a client, and the app for stats and resets."""

    app: SimApp
    host: str
    port: int

    @property
    def url(self) -> str:
        """Return the server's root URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Return the URL to give the SDK as ``base_url`` (or ``OPENAI_BASE_URL``)."""
        return f"{self.url}/v1"

    def stats(self, per_run: bool = False, timeline: bool = False) -> dict[str, Any]:
        """Return what ``GET /_sim/stats`` returns, without a request."""
        return self.app.snapshot(per_run, timeline)

    def reset(self, scenario: str | Path | Scenario | None = None) -> None:
        """Forget all runs and counters, optionally switching scenario."""
        self.app.reset(load_scenario(scenario) if scenario is not None else None)


def sim_command(*args: str) -> list[str]:
    """Return the command that starts ``runfleet sim`` on a free port in a child process."""
    return [sys.executable, "-m", "runfleet.cli", "sim", "--port", "0", *args]


def announced_url(line: str) -> str | None:
    """Return the root URL named by the first line :func:`run` announces, if it is one."""
    match = re.search(r"(http://\S+)/v1", line)
    return match.group(1) if match else None


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this on Linux; uvloop does not set it on sockets it is
    # handed, and without it Nagle and delayed ACKs add 40 ms to every keep-alive request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve(
    scenario: str | Path | Scenario | dict[str, Any] = "ample",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    time_scale: float | None = None,
    seed: int | None = None,
    api_key: str | None = None,
    log_level: str = "warning",
) -> AsyncIterator[SimServer]:
    """Run the simulator on loopback for the duration of the block.

    Port 0 picks a free port. ``time_scale`` multiplies every scenario duration (0.01 runs the
    scenario 100 times faster). The webhook sender (when the scenario's ``webhooks.url`` is
    set) runs in the app's lifespan, so it lives exactly as long as the server. Example::

        async with serve("tight", time_scale=0.05) as sim:
            client = AsyncOpenAI(base_url=sim.base_url, api_key="sk-sim")
    """
    sc = load_scenario(scenario)
    changes: dict[str, Any] = {}
    if time_scale is not None:
        changes["time_scale"] = time_scale
    if seed is not None:
        changes["seed"] = seed
    if api_key is not None:
        changes["api_key"] = api_key
    if changes:
        sc = sc.replace(**changes)
    app = SimApp(sc)
    async with serve_asgi(app, host=host, port=port, log_level=log_level) as bound:
        yield SimServer(app, host, bound)


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> AsyncIterator[int]:
    """Serve any ASGI app (with its lifespan) on loopback for the block; yield the port.

    What :func:`serve` runs the simulator with; tests and benchmarks also serve a webhook
    receiver with it, so that deliveries cross a real socket.
    """
    sock = _bind(host, port)
    config = uvicorn.Config(
        app, log_level=log_level, lifespan="on", access_log=False, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    logging.getLogger("uvicorn.error").addFilter(_HIDE_DROPS)
    try:
        # startup/shutdown rather than serve(): serve() takes over SIGINT, which is not ours
        # to take inside someone else's program or test run. Its main loop only refreshes the
        # Date header, so the block's exceptions need no task group to wrap them.
        config.load()
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        try:
            yield sock.getsockname()[1]
        finally:
            await server.shutdown(sockets=[sock])
    finally:
        sock.close()


def run(
    scenario: str | Path | Scenario = "ample",
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    time_scale: float | None = None,
    seed: int | None = None,
    api_key: str | None = None,
    log_level: str = "warning",
    announce: Callable[[str], None] = print,
) -> int | None:
    """Serve the simulator in the foreground until Ctrl-C (what ``runfleet sim`` does).

    Returns the signal that stopped it (uvicorn re-raises it after a graceful shutdown, but a
    signal that lands while the loop winds down can be swallowed: the caller still knows).

    Raises:
        ScenarioError: the scenario is unknown or invalid (before anything listens).
        OSError: the address cannot be bound.
    """
    sc = load_scenario(scenario)
    changes = {
        k: v
        for k, v in {"time_scale": time_scale, "seed": seed, "api_key": api_key}.items()
        if v is not None
    }
    sc = sc.replace(**changes) if changes else sc
    sock = _bind(host, port)
    config = uvicorn.Config(SimApp(sc), log_level=log_level, lifespan="on", access_log=False)
    logging.getLogger("uvicorn.error").addFilter(_HIDE_DROPS)
    base = f"http://{host}:{sock.getsockname()[1]}/v1"
    announce(
        f"runfleet sim: scenario {sc.name!r} (time scale {sc.time_scale:g}) on {base}\n"
        f"  export OPENAI_BASE_URL={base} OPENAI_API_KEY={sc.api_key or 'sk-sim'}\n"
        f"  stats: GET {base.removesuffix('/v1')}/_sim/stats   reset: POST .../_sim/reset"
    )
    server = _Server(config)
    try:
        # Server.run picks uvloop when it is installed: about a third more requests per second.
        server.run(sockets=[sock])
    finally:
        sock.close()
    return server.stopped_by


class _Server(uvicorn.Server):
    """uvicorn's server, remembering which signal asked it to stop."""

    stopped_by: int | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stopped_by = self.stopped_by or sig
        super().handle_exit(sig, frame)
