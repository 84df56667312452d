"""The keyword shortcuts of :class:`~runfleet.fleet.Fleet`: a spec's fields as arguments.

Apart from the fleet so its face stays thin: each builds a spec and hands it to ``submit``,
so a shortcut can never start a run any other way than ``submit`` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .engine.handle import RunHandle
from .kinds.assistants import AssistantRunSpec
from .kinds.responses import ResponseSpec
from .results import RunResult

__all__ = ["UNSET", "Shortcuts"]

UNSET: Any = object()
"""A deadline not given: the fleet's default applies (None would mean "no deadline")."""


class Shortcuts:
    """``submit_response``/``submit_run`` and their waiting forms ``respond``/``run``."""

    async def submit(
        self,
        spec: ResponseSpec | AssistantRunSpec,
        *,
        timeout: float | None = UNSET,  # noqa: ASYNC109 - the run's deadline, not this call's
        tag: Any = None,
    ) -> RunHandle:
        raise NotImplementedError  # the fleet's

    async def submit_response(
        self,
        *,
        model: str,
        input: Any,
        instructions: str | None = None,
        tools: Iterable[dict[str, Any]] = (),
        metadata: dict[str, str] | None = None,
        timeout: float | None = UNSET,  # noqa: ASYNC109 - the run's deadline, not this call's
        tag: Any = None,
        **extra: Any,
    ) -> RunHandle:
        """Start a background response (``ResponseSpec``'s fields); return its handle."""
        spec = ResponseSpec.of(model, input, instructions, metadata, tuple(tools), extra)
        return await self.submit(spec, timeout=timeout, tag=tag)

    async def submit_run(
        self,
        *,
        assistant_id: str,
        prompt: str | None = None,
        thread_id: str | None = None,
        instructions: str | None = None,
        model: str | None = None,
        tools: Iterable[dict[str, Any]] = (),
        metadata: dict[str, str] | None = None,
        timeout: float | None = UNSET,  # noqa: ASYNC109 - the run's deadline, not this call's
        tag: Any = None,
        **extra: Any,
    ) -> RunHandle:
        """Start an Assistants run (legacy API); return its handle."""
        spec = AssistantRunSpec(
            assistant_id, prompt, thread_id, instructions, model, metadata, tuple(tools), extra
        )
        return await self.submit(spec, timeout=timeout, tag=tag)

    async def respond(self, **kwargs: Any) -> RunResult:
        """Start a background response and wait for it (arguments of :meth:`submit_response`).

        Raises:
            RunError: it failed, expired, timed out, was cancelled or refused.
        """
        return await (await self.submit_response(**kwargs))

    async def run(self, **kwargs: Any) -> RunResult:
        """Start an Assistants run and wait for it (arguments of :meth:`submit_run`)."""
        return await (await self.submit_run(**kwargs))
