"""What a request costs in tokens before it is sent, and what the fleet learns of its error.

A kind adapter reads a request's text and ``max_output_tokens`` into a :class:`TokenCost`;
:class:`TokenEstimates` turns it into the tokens to count (corrected by each model's learned
ratio, with a learned output when none is set) and the room to wait for, and learns from every
run's ``usage``. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..stats import quantile

__all__ = ["CHARS_PER_TOKEN", "TokenCost", "TokenEstimates", "count_tokens"]

CHARS_PER_TOKEN = 4
"""The character rule: OpenAI's own rule of thumb for English text, about 4 characters a token.

It is also what OpenAI's limiter charges: its rate-limit guide counts a request as "the
estimated number of tokens based on the character count of your request" (and the output
reservation), not as the model's tokenizer does, so an exact count would not predict the
charge better; the ``usage`` a run reports is the tokenizer's, and what the rule gets wrong
against it is learned per model either way. :class:`TokenEstimates`' ``counter`` takes any
other count (an offline tokenizer that ships its encodings; nothing may download at run time).
"""


def count_tokens(texts: Iterable[str]) -> int:
    """Estimate the tokens of some text by the character rule (characters / 4, rounded up)."""
    return math.ceil(sum(len(text) for text in texts) / CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class TokenCost:
    """What a request may cost before it is sent, as its adapter reads it from the request.

    Attributes:
        model: what its estimation error is learned by.
        texts: the text the request sends (image parts and files are not counted).
        output: the output reservation the request sets (``max_output_tokens``), if any.
    """

    model: str
    texts: tuple[str, ...]
    output: int | None = None


class TokenEstimates:
    """Turn a request's text into the tokens to reserve, and learn each model's error.

    The server charges its own count of the input; the fleet's rule is a guess at it. After
    each settled run the ratio of the server's input to the fleet's guess moves towards what
    was seen (a moving average), per model, and later estimates are multiplied by it. The key
    is the model, or an Assistants run's assistant id when it names no model, so a service that
    makes assistants as it goes would add one per run: at most ``max_models`` are kept, the
    least recently learned forgotten first (it starts again from 1.0).

    The mean is what a request is counted at, not what it is admitted by: single requests
    stray far from it (a workload whose input barely follows its text strays by 50x), and
    one that costs the server more than the room the fleet waited for is a 429. So the real
    inputs are also kept (the last ``samples`` per model), and :meth:`headroom` asks for room
    for a high ``quantile`` of them (or for the estimate, if higher). Asking for more room
    than a request will use costs no throughput: the buckets keep draining meanwhile, and
    waiting for a level below the top wastes no refill. A bound by the ratio's own quantile
    times the request's count was tried and undercut: where input does not follow the text,
    a short prompt's bound is far too low.

    A request that sets no ``max_output_tokens`` is counted at what its model's runs really
    output: the ``output_quantile`` (p95) of the last ``samples`` outputs of such requests, and
    ``default_output`` until ``_MIN_SAMPLES`` are known. The count is what the fleet expects the
    run to cost, so a count near the real output spends the limit instead of holding a default
    that most runs never use. The room such a request waits for on the server's count keeps
    ``default_output`` (at least), since that is what a server reserves for it on admission.

    Args:
        counter: counts the tokens of some text (the character rule by default).
        default_output: the output reserved when a request sets no ``max_output_tokens`` and
            nothing is learned yet; also the server's own reservation then, as far as the
            fleet knows (OpenAI does not publish it).
        max_models: most models whose ratio is kept.
    """

    def __init__(
        self,
        counter: Callable[[Iterable[str]], int] = count_tokens,
        *,
        default_output: int = 1000,
        weight: float = 0.2,
        max_models: int = 1024,
        quantile: float = 0.99,
        output_quantile: float = 0.95,
        samples: int = 200,
    ) -> None:
        if isinstance(default_output, bool) or not isinstance(default_output, int):
            raise ValueError(f"default_output must be a whole number, got {default_output!r}")
        if default_output < 1:
            raise ValueError(f"default_output must be at least 1 token, got {default_output!r}")
        if max_models < 1:
            raise ValueError(f"max_models must be at least 1, got {max_models!r}")
        self.counter = counter
        self.default_output = default_output
        self.weight = weight
        self.max_models = max_models
        self.quantile = quantile
        self.output_quantile = output_quantile
        self.ratios: OrderedDict[str, float] = OrderedDict()  # least recently learned first
        self._sums: dict[str, tuple[float, float]] = {}  # decayed real and counted input
        self._inputs: dict[str, deque[int]] = defaultdict(lambda: deque(maxlen=samples))
        self._outputs: dict[str, deque[int]] = defaultdict(lambda: deque(maxlen=samples))

    def raw_input(self, cost: TokenCost) -> int:
        """Return the counter's input tokens for ``cost``, before any learned correction."""
        return self.counter(cost.texts)

    def output(self, cost: TokenCost) -> int:
        """Return the output to count for ``cost``: its ``max_output_tokens``, or as learned."""
        if cost.output is not None:
            return cost.output
        outputs = self._outputs.get(cost.model)
        if outputs is None or len(outputs) < _MIN_SAMPLES:
            return self.default_output
        return max(1, math.ceil(quantile(sorted(outputs), self.output_quantile, upper=True)))

    def charge(self, cost: TokenCost, raw_input: int) -> int:
        """Return the tokens to reserve: corrected input plus the output to count."""
        inp = math.ceil(raw_input * self.ratios.get(cost.model, 1.0))
        return max(1, inp + self.output(cost))

    def headroom(self, cost: TokenCost, raw_input: int) -> int:
        """Return the room a request must find: a high quantile of its possible real cost.

        That is what the server may take on admission: the input, and the output it reserves
        (``max_output_tokens``, else at least ``default_output``). Until a model has settled a
        few runs the input is its estimate (the :meth:`bound`); nothing is known yet.
        """
        inputs = self._inputs.get(cost.model)
        if inputs is None or len(inputs) < _MIN_SAMPLES:
            return self.bound(cost, raw_input)
        high = quantile(sorted(inputs), self.quantile, upper=True)
        return max(self.charge(cost, raw_input), math.ceil(high) + self._reserved(cost))

    def bound(self, cost: TokenCost, raw_input: int) -> int:
        """Return the most the request can really use: its input as estimated, and the output
        the server reserves for it (``max_output_tokens``, else at least ``default_output``).

        The ledger keeps room for it beside what the last minute used: counted at the learned
        p95, the newest request is the one whose excess nothing else can absorb.
        """
        charge = self.charge(cost, raw_input)
        return max(charge, charge - self.output(cost) + self._reserved(cost))

    def _reserved(self, cost: TokenCost) -> int:
        """The output a server reserves on admission, as far as the fleet knows."""
        if cost.output is not None:
            return cost.output
        return max(self.default_output, self.output(cost))

    def learn(self, model: str, raw_input: int, real_input: int, output: int | None = None) -> None:
        """Move the model's ratio towards ``real_input / raw_input``; keep the real sizes.

        ``output`` is the run's real output when its requests set no ``max_output_tokens``
        (an output capped by one says little of what runs produce unbounded).
        """
        if output is not None and output > 0:
            self._outputs[model].append(output)
        if raw_input <= 0 or real_input <= 0:
            return
        seen = min(_MAX_RATIO, max(1 / _MAX_RATIO, real_input / raw_input))
        # A ratio of (decaying) sums, not a mean of ratios: the mean weighs a short prompt's
        # lesson as much as a long one's and overcharges whenever input does not follow text.
        real, raw = self._sums.get(model, (0.0, 0.0))
        real, raw = real * (1 - self.weight) + raw_input * seen, raw * (1 - self.weight) + raw_input
        self._sums[model] = (real, raw)
        self.ratios.pop(model, None)
        self.ratios[model] = real / raw  # the most recently learned last
        self._inputs[model].append(real_input)
        if len(self.ratios) > self.max_models:
            forgotten, _ = self.ratios.popitem(last=False)
            self._sums.pop(forgotten, None)
            self._inputs.pop(forgotten, None)
            self._outputs.pop(forgotten, None)


_MIN_SAMPLES = 10  # settled runs before a quantile of them means anything
_MAX_RATIO = 1000.0  # a bound on one run's lesson, so a 1-character prompt cannot teach 1e6
