"""How runfleet logs: structlog events through the standard library, silent until asked.

A library that prints by default mixes its lines into its users' output, and one that writes
to a stream can die of it (a closed pipe raised ``BrokenPipeError`` inside the poll loop). So
every event goes to ``logging.getLogger("runfleet…")``: structlog's processors (the
application's if it configured structlog, structlog's defaults otherwise) turn it into a line,
and the standard library decides where it goes. An application that configured nothing gets
the standard library's answer: warnings and errors on stderr (its last-resort handler), nothing
else. ``logging.getLogger("runfleet").setLevel(logging.INFO)`` plus a handler turns more on.

Nothing is added to the ``runfleet`` logger here: a ``NullHandler`` would silence the warnings
too, and those are what an unconfigured application should still see.

:func:`configure` is what ``runfleet`` the command does for itself; an application does its own.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import MutableMapping, Sequence
from typing import Any

import structlog

from .errors import key_hint

__all__ = ["configure", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
_reported: set[str] = set()  # kinds of logging failure already told on stderr


class _GuardedLogger(structlog.stdlib.BoundLogger):
    """Skip disabled levels before any processor runs; never let a failure to log escape."""

    def _proxy_to_logger(
        self, method_name: str, event: str | None = None, *event_args: str, **event_kw: Any
    ) -> Any:
        # The standard library caches isEnabledFor per logger: a disabled debug line in the
        # poll loop costs this check, not a processor chain.
        if not self._logger.isEnabledFor(_LEVELS.get(method_name, logging.INFO)):
            return None
        try:
            return super()._proxy_to_logger(method_name, event, *event_args, **event_kw)
        except Exception:  # a handler or processor that raises must not end a run
            _report_failure()
            return None


def _report_failure() -> None:
    """Say on stderr that logging failed, once per kind of failure, as ``handleError`` would.

    A broken sink fails on every line; one report says so, thousands would bury the output.
    """
    kind = type(sys.exc_info()[1]).__qualname__
    if kind in _reported or not logging.raiseExceptions:
        return
    _reported.add(kind)
    with contextlib.suppress(Exception):  # stderr is gone too: nothing left to tell
        sys.stderr.write(
            f"runfleet: a log event could not be written (the run goes on; further {kind}s "
            "while logging are not reported):\n" + traceback.format_exc()
        )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return the structlog logger of module ``name``, bound to ``logging.getLogger(name)``.

    Lazy: the processors are looked up at each event, so ``structlog.configure`` (or a test's
    ``capture_logs()``) called after import still applies.
    """
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name), wrapper_class=_GuardedLogger
    )
    return logger


class _Stderr(logging.Handler):
    """Write to whatever ``sys.stderr`` is when the event comes (a redirect, a test's capture)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def configure(*, verbose: int = 0, fmt: str = "console", secrets: Sequence[str] = ()) -> None:
    """Send runfleet's events to stderr, as the ``runfleet`` command does.

    Args:
        verbose: 0 shows warnings and errors, 1 adds info events, 2 or more debug events.
        fmt: ``"console"`` (readable lines; coloured on a terminal) or ``"json"`` (one object a
            line, with ``timestamp``, ``level`` and ``logger``).
        secrets: strings (API keys) replaced by their last four characters wherever they appear.
    """
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    elif sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    else:
        renderer = _plain
    # One chain renders runfleet's events and plain stdlib records (the simulator's) alike, so
    # that --log-format json gives JSON lines only.
    chain: list[Any] = [structlog.stdlib.add_log_level]
    if fmt == "json":
        chain += [
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ]
    structlog.configure(processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter])
    handler = _Stderr(level)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                *chain,
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redactor(secrets),
                renderer,
            ],
        )
    )
    root = logging.getLogger("runfleet")
    for old in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(old)  # configured again (tests call the command in-process)
    root.addHandler(handler)
    root.setLevel(level)


def _redactor(secrets: Sequence[str]) -> Any:
    hidden = [s for s in secrets if s and len(s) > 4]

    def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str):
                for secret in hidden:
                    value = value.replace(secret, "..." + key_hint(secret))
                event[key] = value
        return event

    return redact


def _plain(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """Render one event as ``runfleet: warning event key=value ...``."""
    level, name = event.pop("level", "info"), event.pop("event", "")
    fields = " ".join(f"{k}={v}" for k, v in event.items())
    return f"runfleet: {level} {name} {fields}".rstrip()
