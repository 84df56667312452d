"""``runfleet batch``: check the input and the server, open the files, run one session.

Everything that can refuse a batch happens here, before the first create: the tools, the
input under ``--strict``, the key, the address (one cheap request, which also tells the
account's requests-per-minute limit when ``--rpm`` is left out), the output and the journal.
Then the journal's lock (:mod:`runfleet.batch.lock`): a second batch on the same journal is
refused, naming the first, before it touches a file. The files come last: a batch refused
for any other reason leaves no file behind, and an existing journal (a resume, or one
``--fresh`` is told to forget) is left as it was. The session itself — the order of
journal writes, resume, Ctrl-C and SIGTERM — is :mod:`runfleet.batch.session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import importlib
import importlib.util
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import openai
from openai import AsyncOpenAI

from ..admission.build import RedisLimits, account_of
from ..errors import AuthError, RedisUnavailable, key_hint
from ..kinds.responses import WINDOWS
from ..metrics import serve_metrics
from ..tools import Tool, ToolRegistry
from .config import BatchConfig, BatchError
from .files import InputFile, OutputFile, read_items
from .journal import Journal, JournalMismatch
from .lock import JournalBusy, JournalLock
from .report import BatchSummary
from .session import BatchSession

__all__ = ["BatchConfig", "BatchError", "BatchStopped", "load_tools", "probe", "run_batch"]

_SQLITE_SIDES = ("-wal", "-shm")  # a journal in WAL mode is three files
_HOLDER_WAIT = 20  # looks, 50 ms apart, for a holder that has locked but not yet said who


def load_tools(target: str) -> tuple[Any, ...]:
    """Import ``module:attr`` (or ``path/to/file.py:attr``); return the tools it names.

    ``attr`` may be a tool, a list of tools or functions, or a ``ToolRegistry``. Plain
    functions are made tools here, so that one the model could not call (an unannotated
    parameter, say) refuses the batch before anything is sent or written.

    Raises:
        BatchError: the module cannot be imported (or raises on import), the attribute is
            missing, or it holds no tools or one that cannot be a tool.
    """
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise BatchError(f"--tools {target!r}: expected MODULE:ATTR (e.g. my_tools:TOOLS)")
    try:
        if module_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {module_name}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")  # modules beside the user, as `python -m` would
            module = importlib.import_module(module_name)
    except (ImportError, OSError) as exc:
        raise BatchError(f"--tools {target!r}: cannot import {module_name}: {exc}") from None
    except Exception as exc:  # the user's module runs here: any failure is theirs to read
        raise BatchError(
            f"--tools {target!r}: importing {module_name} raised {_one_line(exc)}"
        ) from None
    try:
        value = getattr(module, attr)
    except AttributeError:
        raise BatchError(f"--tools {target!r}: {module_name} has no attribute {attr!r}") from None
    if isinstance(value, ToolRegistry):
        return tuple(value[name] for name in value.names)
    tools: tuple[Any, ...] = ()
    if isinstance(value, Tool) or callable(value):
        tools = (value,)
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
        tools = tuple(value)
    if not tools or not all(callable(t) for t in tools):
        raise BatchError(f"--tools {target!r}: expected a tool, a list of tools or a ToolRegistry")
    try:
        registry = ToolRegistry(tools)
    except (TypeError, ValueError) as exc:
        raise BatchError(f"--tools {target!r}: {_one_line(exc, named=False)}") from None
    return tuple(registry[name] for name in registry.names)


def _one_line(exc: BaseException, *, named: bool = True) -> str:
    """Fold an exception from the user's code onto the one line a refusal gets."""
    text = " ".join(str(exc).split())
    if not named:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class BatchStopped(Exception):
    """Raised when SIGTERM stops a batch before its session began: no item was sent."""


async def run_batch(cfg: BatchConfig) -> BatchSummary:
    """Run one batch session to its end (or its interruption); return its summary.

    Until the session takes SIGTERM over (for its graceful stop), SIGTERM cancels pre-flight:
    what it created is removed on the way out, as for any refusal.

    Raises:
        BatchError: the batch cannot start; nothing was sent.
        BatchStopped: SIGTERM came first.
    """
    loop = asyncio.get_running_loop()
    no_signals = (NotImplementedError, RuntimeError, ValueError)  # not the main thread, say
    with anyio.CancelScope() as preflight:
        with contextlib.suppress(*no_signals):
            loop.add_signal_handler(signal.SIGTERM, preflight.cancel)
        try:
            return await _preflight(cfg)
        finally:
            with contextlib.suppress(*no_signals):
                loop.remove_signal_handler(signal.SIGTERM)  # a no-op once the session took it
    raise BatchStopped("stopped by SIGTERM before any item started")


async def _preflight(cfg: BatchConfig) -> BatchSummary:
    if bool(cfg.model) == bool(cfg.assistant):
        raise BatchError("pass exactly one of --model NAME or --assistant ASSISTANT_ID")
    if cfg.max_in_flight < 1:
        raise BatchError("--max-in-flight must be at least 1")
    if cfg.completion_window is not None and cfg.assistant:
        raise BatchError("--completion-window is for background responses (--model), not runs")
    if cfg.completion_window not in (None, *WINDOWS):
        raise BatchError(f"--completion-window must be one of {', '.join(WINDOWS)}")
    try:
        source = read_items(cfg.input)
    except OSError as exc:
        raise BatchError(f"cannot read {cfg.input}: {exc.strerror or exc}") from None
    if cfg.assistant:
        source.refuse_windows()
    if not source.items and not source.invalid:
        # Nothing to start and nothing to report line by line: refused before any file exists.
        raise BatchError(f"{cfg.input}: no items (the file is empty or blank), nothing sent")
    if cfg.shard is not None:  # its own part of the file, its own output and journal
        source = cfg.shard.select(source)
        cfg = dataclasses.replace(cfg, out=cfg.shard.output(cfg.out))
    if cfg.strict and source.invalid:
        first = source.invalid[0]
        raise BatchError(
            f"{cfg.input}: {len(source.invalid)} invalid line(s), nothing sent "
            f"(first: line {first.line}: {first.reason})"
        )
    if cfg.sim is None:
        api_key = cfg.api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise BatchError("no API key: set OPENAI_API_KEY (or use --sim SCENARIO)")
        base_url = cfg.base_url or os.environ.get("OPENAI_BASE_URL")
        return await _session(cfg, source, api_key, base_url)
    from ..sim import ScenarioError, serve  # only the --sim path needs the simulator

    try:
        async with serve(cfg.sim, time_scale=cfg.sim_time_scale) as sim:
            return await _session(cfg, source, "sk-sim", sim.base_url)
    except ScenarioError as exc:
        raise BatchError(str(exc)) from None


async def _shared_limits(cfg: BatchConfig, api_key: str) -> RedisLimits | None:
    """Return the store of ``--redis``, once it answered; a bad or silent URL refuses the batch."""
    if cfg.redis is None:
        return None
    try:
        shared = RedisLimits(
            cfg.redis,
            account=cfg.account or account_of(api_key),
            on_failure=cfg.on_redis_failure,  # type: ignore[arg-type]  # argparse's choices
        )
    except ValueError as exc:
        raise BatchError(f"--redis: {exc}") from None
    try:
        await shared.connect()
    except RedisUnavailable as exc:
        await shared.aclose()
        raise BatchError(f"--redis: {exc}") from None
    return shared


async def probe(client: AsyncOpenAI, where: str) -> float | None:
    """Send one cheap request; return the server's requests-per-minute limit if it names one.

    A retrieve of an id that does not exist: it checks the key and the address, and its 404
    carries the account's rate-limit headers like any answer.

    Raises:
        BatchError: the address cannot be reached or the key is refused.
    """
    try:
        raw = await client.responses.with_raw_response.retrieve("resp_runfleet_probe")
        headers: Any = raw.headers
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise BatchError(
            f"the server refused the API key ...{key_hint(client.api_key)} (HTTP {exc.status_code})"
        ) from None
    except openai.APIStatusError as exc:
        headers = exc.response.headers
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        raise BatchError(f"cannot reach {where}: {exc}") from None
    value = headers.get("x-ratelimit-limit-requests")
    try:
        return float(value) if value is not None and float(value) > 0 else None
    except ValueError:
        return None


async def _session(
    cfg: BatchConfig, source: InputFile, api_key: str, base_url: str | None
) -> BatchSummary:
    for path, what in ((cfg.out, "write"), (cfg.journal_path, "use the journal")):
        if (why := _unwritable(path)) is not None:  # said before a request goes out
            raise BatchError(f"cannot {what} {path}: {why}")
    serving = contextlib.ExitStack()
    try:  # the port is bound before a request goes out
        registry = serving.enter_context(serve_metrics(cfg.metrics_port))
    except OSError as exc:
        raise BatchError(f"cannot serve metrics on :{cfg.metrics_port}: {exc.strerror}") from None
    shared = await _shared_limits(cfg, api_key)
    client = AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0)
    async with client, contextlib.AsyncExitStack() as stack:
        stack.enter_context(serving)  # the metrics server stops with the session
        if shared is not None:
            stack.push_async_callback(shared.aclose)  # also when refused before the fleet
        where = str(client.base_url)
        learned = await probe(client.with_options(timeout=15.0), where)
        rpm = cfg.rpm or learned
        if rpm is None:
            raise BatchError(f"{where} sent no x-ratelimit-limit-requests header: pass --rpm N")
        # Then the locks, held to the end: a second batch on this output or on this journal
        # is refused before it writes a byte (a resume after kill -9 takes them: the kernel
        # dropped the dead one's). The output's is taken by its real path (symlinks too).
        with contextlib.ExitStack() as held:
            for path in (cfg.journal_path, cfg.out.resolve()):
                held.callback((await _lock(path)).release)
            out, journal = _open_files(cfg)  # last: a batch refused above leaves no file behind
            try:
                batch = BatchSession(
                    cfg, source, journal, out, rpm, metrics=registry, shared=shared
                )
                try:
                    return await batch.run(client)
                except* (BatchError, AuthError) as group:
                    raise BatchError(str(_first(group))) from None
            finally:
                journal.close()
                out.close()


async def _lock(path: Path) -> JournalLock:
    """Take the lock of the journal or output ``path``; refuse the batch, naming the holder,
    if another has it.

    Raises:
        BatchError: another process holds it, or the lock file cannot be made.
    """
    refusal = f"{path} is in use by another runfleet batch"
    for _ in range(_HOLDER_WAIT):
        try:
            return JournalLock.take(path)
        except JournalBusy as busy:
            if busy.holder is not None:
                raise BatchError(str(busy)) from None
            refusal = str(busy)
        except OSError as exc:
            raise BatchError(f"cannot lock {path}: {exc.strerror or exc}") from None
        await anyio.sleep(0.05)  # locked an instant ago: its holder is writing who it is
    raise BatchError(refusal)


def _unwritable(path: Path) -> str | None:
    """Say why ``path`` could not be opened for writing, creating nothing; ``None`` if it can."""
    if path.is_dir():
        return os.strerror(errno.EISDIR)
    if path.exists():
        return None if os.access(path, os.W_OK) else os.strerror(errno.EACCES)
    if not path.parent.is_dir():
        return os.strerror(errno.ENOENT)
    return None if os.access(path.parent, os.W_OK | os.X_OK) else os.strerror(errno.EACCES)


def _open_files(cfg: BatchConfig) -> tuple[OutputFile, Journal]:
    """Open the output and the journal once every other check has passed.

    A journal that refuses the batch removes only the files this call created: an existing
    output or journal (a resume) is never ours to delete, and ``--fresh`` forgets the old
    journal only once the output is open.
    """
    journal_path = cfg.journal_path
    new_out, new_journal = not cfg.out.exists(), cfg.fresh or not journal_path.exists()
    try:
        out = OutputFile(cfg.out)
    except OSError as exc:
        raise BatchError(f"cannot write {cfg.out}: {exc.strerror or exc}") from None
    if cfg.fresh:
        _remove(journal_path, *_SQLITE_SIDES)
    journal = None
    try:
        journal = Journal(journal_path)
        target = cfg.model or cfg.assistant or ""
        meta = {"kind": cfg.kind, "target": target, "window": cfg.completion_window or "soonest"}
        journal.bind(meta if cfg.shard is None else {**meta, "shard": str(cfg.shard)})
    except Exception as exc:  # sqlite3.Error and OSError both mean "not usable"
        if journal is not None:
            journal.close()
        out.close()
        if new_out:
            _remove(cfg.out)
        if new_journal:
            _remove(journal_path, *_SQLITE_SIDES)
        if isinstance(exc, JournalMismatch):
            raise BatchError(str(exc)) from None
        raise BatchError(f"cannot use the journal {journal_path}: {exc}") from None
    return out, journal


def _remove(path: Path, *suffixes: str) -> None:
    """Remove ``path`` and its side files ``path + suffix``, those that exist."""
    for name in (str(path), *(str(path) + suffix for suffix in suffixes)):
        with contextlib.suppress(FileNotFoundError):
            Path(name).unlink()


def _first(error: BaseException) -> BaseException:
    """Return the first leaf of a (nested) exception group."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
