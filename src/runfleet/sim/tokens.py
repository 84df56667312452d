"""What a request costs in tokens, and the ``usage`` its run reports: two views of one count.

OpenAI cannot count a request's tokens before admitting it, so its limiter charges an estimate
of the input plus everything the request may produce (``max_output_tokens``, or a default), and
settles once the real usage is known. The simulator keeps the two views consistent: the input
it charges is the input its ``usage`` reports, and the output it reports is what it refunds
against. The input is the text a request sends (a run started on a thread reads the thread);
context carried by ``previous_response_id`` is not charged again, a simplification that keeps
the estimate a function of the request alone.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .lifecycle import Job, Segment
from .scenario import TokenRules
from .world import SimError

__all__ = ["COSTS", "TokenMeter", "response_usage", "run_usage"]

# The endpoints that run the model; retrieves, cancels, lists and thread edits cost nothing.
COSTS = frozenset(
    {"responses.create", "threads.create_and_run", "runs.create", "runs.submit_tool_outputs"}
)

# Where each costing endpoint carries its text, and inside those, which keys hold text.
_TEXT_KEYS = {
    "responses.create": ("instructions", "input"),
    "threads.create_and_run": ("instructions", "additional_instructions", "thread"),
    "runs.create": ("instructions", "additional_instructions", "additional_messages"),
    "runs.submit_tool_outputs": ("tool_outputs",),
}
_NESTED_KEYS = ("messages", "content", "text", "output", "arguments")
# OpenAI refuses a smaller max_output_tokens; Assistants only ask for a positive number.
_MIN_RESERVATION = {"max_output_tokens": 16, "max_completion_tokens": 1}


class TokenMeter:
    """Price requests by the scenario's rules, drawing sizes from a generator of its own.

    The generator is apart from the lifecycle's, so turning token accounting on or off never
    changes the run times and outcomes a seed replays.
    """

    def __init__(self, rules: TokenRules, seed: int) -> None:
        self.rules = rules
        self.unit, self.divisor = rules.rule
        self.rng = random.Random(seed + 2)

    def count(self, texts: Iterable[str]) -> int:
        """Return the estimate for some text: its length in the rule's unit over the divisor."""
        if self.unit == "chars":
            size = sum(len(t) for t in texts)
        else:
            size = sum(len(t.encode()) for t in texts)
        return math.ceil(size / self.divisor)

    def segment(
        self,
        endpoint: str,
        body: Mapping[str, Any],
        now: float,
        *,
        context: Iterable[str] = (),
        settings: Mapping[str, Any] | None = None,
    ) -> Segment:
        """Price one request: its input, its output reservation and the output it will make.

        ``context`` is text the request makes the model read besides its own (a thread's
        messages); ``settings`` holds the reservation when the request itself does not (the
        run a ``submit_tool_outputs`` continues).

        Raises:
            SimError: the reservation is not an integer or below OpenAI's minimum (a 400).
        """
        reserved = self._reservation(endpoint, body if settings is None else settings)
        if self.rules.input is not None:
            inp = max(1, round(self.rules.input.draw(self.rng)))
        else:
            inp = self.count(itertools.chain(context, texts_of(body, _TEXT_KEYS[endpoint])))
        out = min(reserved, max(1, round(self.rules.output.draw(self.rng))))
        return Segment(now, inp, reserved, out)

    def _reservation(self, endpoint: str, settings: Mapping[str, Any]) -> int:
        key = "max_output_tokens" if endpoint.startswith("responses.") else "max_completion_tokens"
        value = settings.get(key)
        if value is None:
            return self.rules.default_max_output_tokens
        if not isinstance(value, int) or isinstance(value, bool):
            raise SimError(
                400, f"Invalid type for '{key}': expected an integer.", param=key,
                code="invalid_type",
            )  # fmt: skip
        least = _MIN_RESERVATION[key]
        if value < least:
            raise SimError(
                400, f"Invalid '{key}': integer below minimum value. Expected a value >= "
                f"{least}, but got {value} instead.", param=key, code="integer_below_min_value",
            )  # fmt: skip
        return value


def texts_of(value: Any, keys: Iterable[str] = _NESTED_KEYS) -> Iterator[str]:
    """Yield the text in a request body: strings under ``keys``, then under text-bearing keys."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from texts_of(item)
    elif isinstance(value, Mapping):
        for key in keys:
            if key in value:
                yield from texts_of(value[key])


def response_usage(job: Job) -> dict[str, Any]:
    """Return a response's ``usage`` in the shape of the SDK's ``ResponseUsage``."""
    inp, out = job.usage()
    return {
        "input_tokens": inp,
        # The SDK's model requires cache_write_tokens although OpenAI's docs show only cached.
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": inp + out,
    }


def run_usage(job: Job) -> dict[str, int]:
    """Return an Assistants run's ``usage`` (the SDK's ``Run.usage``): every pass summed."""
    inp, out = job.usage()
    return {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}
