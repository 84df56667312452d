"""Creating a run when a create's fate can be unknown: each try marked, an ambiguous one counted.

A create whose connection broke after it was sent, that timed out, or whose 2xx answer cannot
be read may have been applied. OpenAI honours no idempotency key and Responses cannot be
listed, so the fleet cannot find out; sending it again may start a second run, paid for. So
each try carries its own nonce in ``metadata`` (beside the batch's item id), an ambiguous
failure is counted and logged, and by policy the create is sent again with the run marked
``recreated`` and why, or given up as :class:`~runfleet.errors.AmbiguousCreate`
(invariant 8: nothing created twice silently). Where a copy can be looked for (an Assistants
run on a known thread: its runs can be listed), it is, by its nonce: adopted if found, and
if not, the try was never applied; later tries of a ``create_and_run`` make their thread
first for that reason. A failure before sending (no connection) or a refusal is no
ambiguity: those follow :mod:`runfleet.engine.failures`.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx2
import openai

from ..errors import AmbiguousCreate, UnreadableBody
from ..kinds.base import TRY_KEY, Observation, marked
from ..logs import get_logger
from ..stats import StatsCollector
from .failures import Retrier
from .run import Tracked

__all__ = ["Creator", "OnAmbiguous", "ambiguity"]

log = get_logger(__name__)
OnAmbiguous = Literal["retry", "fail"]
T = TypeVar("T")

# Failures that happen before a byte of the request left: nothing can have been applied.
_NEVER_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)


def ambiguity(exc: BaseException) -> str | None:
    """Return why a failed create may have been applied, or None when it surely was not."""
    if isinstance(exc, UnreadableBody):
        return "unreadable answer"
    if not isinstance(exc, openai.APIConnectionError):  # a timeout is one too
        return None
    if isinstance(exc.__cause__, _NEVER_SENT):
        return None
    return "timed out" if isinstance(exc, openai.APITimeoutError) else "connection lost"


class Creator:
    """Send a run's create, again on transient errors, each try with its own nonce.

    Args:
        retrier: the backoff and the number of tries after the first.
        stats: where ambiguous creates are counted.
        on_ambiguous: ``"retry"`` sends an ambiguous create again and marks the run
            recreated; ``"fail"`` ends the run with ``AmbiguousCreate``.
    """

    def __init__(
        self, *, retrier: Retrier, stats: StatsCollector, on_ambiguous: OnAmbiguous
    ) -> None:
        self._retrier = retrier
        self._stats = stats
        self._on_ambiguous = on_ambiguous

    async def create(self, run: Tracked, spec: Any) -> Observation:
        """Create ``run`` from ``spec``; return the create's observation.

        Where the kind can look for a try's copy (an Assistants run on a known thread), an
        ambiguous try is looked for before the next is sent: found, it is adopted; not found,
        it was never applied. Neither is a second copy, and neither is marked.

        Raises:
            AmbiguousCreate: a try may have been applied and policy, or the tries left, say
                not to send it again.
            Exception: the last try's error when none was ambiguous.
        """
        kind, ref = run.kind, run.ref
        return await self._tries(
            run,
            spec,
            lambda sent: kind.start(sent, ref),
            lambda sent, nonce: kind.find(sent, ref, nonce),
        )

    async def send(self, run: Tracked, spec: Any, send: Callable[[Any], Awaitable[T]]) -> T:
        """Return ``send(spec)``, each try with its own nonce in ``spec``'s metadata.

        ``send`` is any other request that starts a run: the follow-up that continues a
        Responses chain after a tool round (a new response, as costly, never findable).

        Raises:
            AmbiguousCreate: as :meth:`create`.
        """
        return await self._tries(run, spec, send, None)

    async def _tries(
        self,
        run: Tracked,
        spec: Any,
        send: Callable[[Any], Awaitable[T]],
        find: Callable[[Any, str], Awaitable[T | None]] | None,
    ) -> T:
        state = _Tries(spec)

        async def one_try() -> T:
            if state.doubt is not None and find is not None:
                state.looking = True
                found = await find(state.spec, state.nonce)
                state.looking, state.doubt = False, None
                if found is not None:
                    log.info("create_adopted", kind=run.kind.name, nonce=state.nonce)
                    return found
            state.nonce = secrets.token_hex(8)
            metadata = marked(state.spec.metadata, **{TRY_KEY: state.nonce})
            return await send(dataclasses.replace(state.spec, metadata=metadata))

        def counted() -> None:
            run.requests += 1

        def failed(exc: Exception, last: bool) -> None:
            if state.looking:  # the look failed: the doubt stays, the next try looks again
                state.looking = False
                if last:
                    raise AmbiguousCreate(run.ref.id or "-", state.doubt or "-") from exc
                return
            why = ambiguity(exc)
            if why is None:
                return
            self._stats.ambiguous_creates += 1
            findable, later = run.kind.findable(state.spec) if find else (False, state.spec)
            log.warning(
                "create_ambiguous", kind=run.kind.name, nonce=state.nonce, reason=why,
                policy="look" if findable else self._on_ambiguous, error=str(exc),
            )  # fmt: skip
            if last or (self._on_ambiguous == "fail" and not findable):
                raise AmbiguousCreate(run.ref.id or "-", why) from exc
            if findable:  # the next try looks for this one's copy before it sends
                state.doubt = why
                return
            # The next try may start a second copy: the run says so from now on; its later
            # tries are sent so that theirs can be looked for, where the kind allows.
            run.recreated_why = run.recreated_why or why
            state.spec = later

        return await self._retrier.call(
            one_try, run_id=lambda: run.ref.id or "-", on_try=counted, on_error=failed
        )


@dataclass(slots=True)
class _Tries:
    """The tries of one create: what the next sends, the last one's nonce, and whether it
    may have been applied where a copy can be looked for (``doubt``: why)."""

    spec: Any
    nonce: str = "-"
    doubt: str | None = None
    looking: bool = False
