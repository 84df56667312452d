"""Strategy names as the command line writes them: ``classic``, ``fleet:latency=2s,webhooks``.

A spec is parsed and checked before anything runs, so a typo costs one line of error, not a
half-finished benchmark.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..polling.schedule import Backoff

__all__ = [
    "DEFAULT_STRATEGIES",
    "STRATEGIES",
    "BenchError",
    "StrategySpec",
    "classic_backoff",
    "parse_strategies",
]


class BenchError(ValueError):
    """Raised when the bench is asked for something it cannot do; the message is one line."""


STRATEGIES = ("naive", "classic", "fixed2s", "sdk", "cookbook", "fleet")
DEFAULT_STRATEGIES = {
    "responses": ("naive", "classic", "fixed2s", "fleet"),
    "assistants": ("naive", "classic", "fixed2s", "sdk", "fleet"),
}

_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s)?$")
# Option name -> kind of value, per strategy. "flag" takes no value.
_OPTIONS: dict[str, dict[str, str]] = {
    "naive": {},
    "classic": {"initial": "duration", "factor": "factor", "cap": "duration"},
    "fixed2s": {},
    "sdk": {},
    "cookbook": {},
    "fleet": {
        "latency": "duration",
        "fraction": "fraction",
        "webhooks": "flag",
        "drop": "fraction",
        "safety": "duration",
        "per_second": "factor",  # requests in any scenario second (a number >= 1)
        "comb": "flag",  # PollPolicy(comb=True)
    },
}

_SETTINGS = frozenset(name for options in _OPTIONS.values() for name in options)


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """One strategy to run: its name and settings (durations in scenario seconds)."""

    name: str
    options: Mapping[str, float | bool] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Return the spec as the table shows it, options in the order they were given."""
        if not self.options:
            return self.name
        parts = [k if v is True else f"{k}={_show(k, v)}" for k, v in self.options.items()]
        return f"{self.name}:{','.join(parts)}"

    def number(self, key: str, default: float) -> float:
        """Return a numeric option, or ``default`` when it was not given."""
        value = self.options.get(key, default)
        return float(value)


def classic_backoff(spec: StrategySpec) -> Backoff:
    """Return the delays of a ``classic`` spec: the classic loop's, but for the settings given.

    Without jitter and without a floor, as the hand-written recipe sleeps them.
    """
    classic = Backoff()
    return Backoff(
        initial=spec.number("initial", classic.initial),
        factor=spec.number("factor", classic.factor),
        cap=spec.number("cap", classic.cap),
        jitter=0.0,
        min_interval=0.0,
    )


def _show(key: str, value: float | bool) -> str:
    kind = next(k for opts in _OPTIONS.values() for n, k in opts.items() if n == key)
    if kind != "duration":
        return f"{value:g}"
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def _value(spec: str, key: str, kind: str, text: str | None) -> float | bool:
    if kind == "flag":
        if text is not None:
            raise BenchError(f"strategy {spec!r}: {key} takes no value")
        return True
    if text is None:
        raise BenchError(f"strategy {spec!r}: {key} needs a value, e.g. {key}=2s")
    if kind == "duration":
        m = _DURATION.match(text.strip())
        seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1) if m else 0.0
        if seconds < 0.001:
            raise BenchError(
                f"strategy {spec!r}: {key} must be a duration of at least 1ms, like 2s or 500ms"
            )
        return seconds
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        value = math.nan
    if kind == "factor":
        if not (math.isfinite(value) and value >= 1):
            raise BenchError(f"strategy {spec!r}: {key} must be a number >= 1")
        return value
    if not 0 <= value <= 1:
        raise BenchError(f"strategy {spec!r}: {key} must be a fraction from 0 to 1, e.g. 20%")
    return value


def parse_strategy(text: str, kind: str) -> StrategySpec:
    """Parse ``name[:key[=value],...]`` and check it makes sense for ``kind``.

    Raises:
        BenchError: naming the strategy and what is wrong with it.
    """
    name, _, rest = text.strip().partition(":")
    if "," in name:  # "fleet,webhooks": settings after a comma instead of a colon
        raise BenchError(f"strategy {text!r}: put its settings after a colon, e.g. fleet:webhooks")
    if name not in _OPTIONS:
        raise BenchError(f"unknown strategy {name!r}: choose from {', '.join(STRATEGIES)}")
    allowed = _OPTIONS[name]
    options: dict[str, float | bool] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if key not in allowed:
            known = ", ".join(allowed) or "none"
            raise BenchError(f"strategy {text!r}: unknown setting {key!r} (settings: {known})")
        if key in options:
            raise BenchError(f"strategy {text!r}: {key} is given twice")
        options[key] = _value(text, key, allowed[key], value if eq else None)
    spec = StrategySpec(name, options)
    if name == "sdk" and kind != "assistants":
        raise BenchError(
            "strategy 'sdk' needs --kind assistants: the SDK has no poll helper for responses"
        )
    if name == "classic":
        classic = Backoff()
        cap, initial = spec.number("cap", classic.cap), spec.number("initial", classic.initial)
        if cap < initial:
            raise BenchError(f"strategy {text!r}: cap ({cap:g}s unless given) is below initial")
    if "webhooks" in options and kind != "responses":
        raise BenchError(
            f"strategy {text!r} needs --kind responses: OpenAI sends no webhooks for "
            "Assistants runs"
        )
    if ("drop" in options or "safety" in options) and "webhooks" not in options:
        raise BenchError(f"strategy {text!r}: drop and safety only apply with webhooks")
    return spec


def parse_strategies(texts: str | None, kind: str) -> tuple[StrategySpec, ...]:
    """Parse a list of strategies, the kind's defaults when ``None``.

    Strategies are separated by commas, like their settings: a part that starts with a
    strategy's name starts the next strategy (``naive,classic,fleet:latency=2s,webhooks``);
    ``;`` and spaces also separate them.

    Raises:
        BenchError: for an empty list, a bad strategy or one given twice.
    """
    if texts is None:
        return tuple(StrategySpec(name) for name in DEFAULT_STRATEGIES[kind])
    groups: list[list[str]] = []
    for chunk in re.split(r"[;\s]+", texts):
        for part in filter(None, (p.strip() for p in chunk.split(","))):
            head = re.split(r"[:=]", part, maxsplit=1)[0]
            # A part that is neither a strategy nor a setting is a misspelt strategy: parse it
            # alone, so that the error names it.
            if head in _OPTIONS or head not in _SETTINGS or not groups:
                groups.append([part])
            else:
                groups[-1].append(part)
        groups.append([])  # a ; or a space always ends a strategy
    specs = [parse_strategy(",".join(g), kind) for g in groups if g]
    if not specs:
        raise BenchError("no strategy given")
    labels = [s.label for s in specs]
    if dupes := sorted({x for x in labels if labels.count(x) > 1}):
        raise BenchError(f"strategy {dupes[0]!r} is given twice")
    return tuple(specs)
