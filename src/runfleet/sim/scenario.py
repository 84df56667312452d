"""Scenarios: what the simulated account looks like (run times, outcomes, quota, faults).

A scenario is data, so users can describe their own workload in a JSON file and get the same
behaviour every time from its seed. Validation is strict because a misspelt key that silently
falls back to a default would make a benchmark measure something else than the user believes.
All durations are in scenario seconds; ``time_scale`` maps them onto real seconds.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .dists import Dist, Strict

__all__ = [
    "BUILTIN_SCENARIOS",
    "Dist",
    "Faults",
    "Lifecycle",
    "Outcomes",
    "Quota",
    "Scenario",
    "ScenarioError",
    "Stalls",
    "Storms",
    "TokenRules",
    "Tools",
    "Webhooks",
    "Window",
    "Windows",
    "load_scenario",
]

BUILTIN_SCENARIOS = ("ample", "faulty", "overnight", "strict", "tight", "tokens", "tools")


class ScenarioError(ValueError):
    """Raised when a scenario names an unknown key or holds an impossible value."""


_Strict = Strict


class Lifecycle(_Strict):
    """How long each phase of a run lasts."""

    queued: Dist = Dist(dist="lognormal", median=0.5, sigma=0.5)
    in_progress: Dist = Dist(dist="lognormal", median=6.0, sigma=0.5)
    # After tool outputs arrive, the model works again; usually shorter than the first pass.
    resume: Dist = Dist(dist="lognormal", median=3.0, sigma=0.5)
    cancel_delay: Dist = Dist.fixed(0.5)
    expires_after: float = Field(default=600.0, gt=0)
    # Background responses are kept only for a while (about 10 min per OpenAI's guide);
    # null keeps them for the life of the server.
    response_ttl: float | None = Field(default=None, gt=0)
    # A workload that changes during the day: runs created after the first ``drift_after``
    # work ``drift_factor`` times as long (their first pass; tool rounds keep ``resume``).
    drift_after: int | None = Field(default=None, ge=0)
    drift_factor: float = Field(default=2.0, gt=0)


class Outcomes(_Strict):
    """Probabilities of how a run ends when it does not end ``completed``."""

    failed: float = Field(default=0.0, ge=0, le=1)
    incomplete: float = Field(default=0.0, ge=0, le=1)
    rate_limit_share: float = Field(default=0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _sum(self) -> Outcomes:
        if self.failed + self.incomplete > 1:
            raise ValueError("failed + incomplete exceeds 1")
        return self


class Tools(_Strict):
    """How often runs ask for tools, and the shape of those rounds."""

    probability: float = Field(default=0.0, ge=0, le=1)
    rounds: Dist = Dist(dist="uniform", low=1, high=3)
    calls_per_round: Dist = Dist(dist="uniform", low=1, high=2)
    # Names used when the request declares no function tools of its own.
    names: tuple[str, ...] = ("get_weather",)
    # After outputs are submitted, the run may still show the same requires_action for a while.
    submit_lag: Dist = Dist.fixed(0.0)


class Stalls(_Strict):
    """Runs that stay ``queued`` far beyond the usual, as users observe on the live API."""

    probability: float = Field(default=0.0, ge=0, le=1)
    queued: Dist = Dist.fixed(300.0)


class Quota(_Strict):
    """The account's request and token limits, each enforced as a bucket over ``window`` seconds.

    A window below 60 s is OpenAI's sub-minute enforcement: 600 RPM with a 1 s window admits
    at most 10 requests in any second, not 600 at once. ``tpm`` null means no token limit:
    tokens are still counted and reported, never refused.
    """

    rpm: float = Field(default=10_000.0, gt=0)
    tpm: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    window: float = Field(default=60.0, gt=0, le=60)
    retry_after: bool = True
    # Whether requests refused with 429 still count in the window (OpenAI says failed
    # requests count); off by default so a client that backs off recovers at once.
    count_rejected: bool = False
    # "bucket": refilled during the window, so any one window may see up to twice its share
    # (full bucket plus refill). "log": a log of arrivals, at most rpm * window / 60 in any
    # window at all, as servers that count per second strictly do.
    enforce: Literal["bucket", "log"] = "bucket"
    # False: send no x-ratelimit-*-tokens headers at all, as some OpenAI-compatible servers
    # and proxies do (a ``tpm`` is then enforced without a word before its 429s).
    token_headers: bool = True


class TokenRules(_Strict):
    """How the account counts a request's tokens: charged at admission, settled at the end.

    OpenAI charges an estimate of the input plus the output reservation when it admits a
    request and gives back the unused part once usage is known; these keys make that estimate
    and the real sizes a scenario's choice, since OpenAI does not publish its own rule.
    """

    # "chars/4" or "bytes/3.6": the request's text length in that unit over the divisor.
    estimate: str = "chars/4"
    # When set, a request's input size is drawn from this instead of estimated from its text,
    # so a benchmark with short prompts can still make a token limit bind.
    input: Dist | None = None
    # What a client of this scenario sends, not what the simulator does: the sizes of its
    # prompts in tokens by ``estimate`` (``runfleet bench`` writes prompts of these sizes).
    prompts: Dist | None = None
    # The reservation when the request sets no max_output_tokens (max_completion_tokens).
    default_max_output_tokens: int = Field(default=4096, ge=1)
    # Real output sizes; a draw above the request's reservation is capped at it.
    output: Dist = Dist(dist="lognormal", median=250.0, sigma=0.7)

    @field_validator("estimate")
    @classmethod
    def _estimate(cls, value: str) -> str:
        _parse_rule(value)  # fail at load, not at the first request
        return value

    @property
    def rule(self) -> tuple[Literal["chars", "bytes"], float]:
        """Return the estimate as (unit, divisor)."""
        return _parse_rule(self.estimate)


def _parse_rule(text: str) -> tuple[Literal["chars", "bytes"], float]:
    unit, _, divisor = text.partition("/")
    try:
        value = float(divisor)
    except ValueError:
        value = math.nan
    if unit not in ("chars", "bytes") or not (math.isfinite(value) and value > 0):
        raise ValueError(f"expected 'chars/N' or 'bytes/N' with N > 0, got {text!r}")
    return ("chars" if unit == "chars" else "bytes"), value


class Storms(_Strict):
    """Periods in which every request gets a 429 whatever the quota says."""

    every: float = Field(default=0.0, ge=0)
    duration: float = Field(default=0.0, ge=0)


class Faults(_Strict):
    """Injected failures, each a fraction of API requests."""

    error_500: float = Field(default=0.0, ge=0, le=1)
    error_503: float = Field(default=0.0, ge=0, le=1)
    slow: float = Field(default=0.0, ge=0, le=1)
    slow_delay: Dist = Dist.fixed(2.0)
    # The request is applied, then the connection closes before the body is sent: the
    # client cannot know whether a create happened (why the SDK's retries are dangerous).
    drop: float = Field(default=0.0, ge=0, le=1)
    # A 2xx answer whose body cannot be read, after the request was applied: ``malformed``
    # is not JSON, ``truncated`` is cut short (its content-length agrees, so the read ends
    # cleanly and only the parse fails). A create answered so did create its run.
    malformed: float = Field(default=0.0, ge=0, le=1)
    truncated: float = Field(default=0.0, ge=0, le=1)
    # Which answers those two spoil: ``create`` (a response, a run, a thread and run),
    # ``retrieve`` (polls), ``other`` (tool outputs, cancels, messages...).
    bad_bodies_on: tuple[Literal["create", "retrieve", "other"], ...] = (
        "create",
        "retrieve",
        "other",
    )
    # A retrieve of a completed response answered without its ``output`` field.
    missing_output: float = Field(default=0.0, ge=0, le=1)
    storms: Storms = Storms()

    @model_validator(mode="after")
    def _sum(self) -> Faults:
        if self.error_500 + self.error_503 + self.drop > 1:
            raise ValueError("error_500 + error_503 + drop exceeds 1")
        if self.malformed + self.truncated > 1:
            raise ValueError("malformed + truncated exceeds 1")
        return self


def _check_secret(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith("whsec_"):
        raise ValueError("a webhook secret starts with 'whsec_'")
    try:
        base64.b64decode(value[6:], validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is 'whsec_' + base64") from None
    return value


class Webhooks(_Strict):
    """Signed deliveries of ``response.*`` events for background responses (off without url).

    Fractions apply per delivery; delays are scenario seconds after the response ended. The
    knobs exist because OpenAI promises only at-least-once, unordered delivery: a receiver
    must survive duplicates, late and lost events, and a secret rotation.
    """

    url: str | None = None
    secret: str = "whsec_c2ltdWxhdG9yLXdlYmhvb2stc2VjcmV0LTAwMDA="
    delay: Dist = Dist(dist="lognormal", median=0.05, sigma=0.5)
    duplicate: float = Field(default=0.0, ge=0, le=1)
    drop: float = Field(default=0.0, ge=0, le=1)
    # A reordered delivery is held back by reorder_delay, so later events overtake it.
    reorder: float = Field(default=0.0, ge=0, le=1)
    reorder_delay: Dist = Dist.fixed(2.0)
    # Rotation: until rotation_until (scenario seconds; null = always) each delivery carries
    # a second signature made with previous_secret, as OpenAI does while a secret rotates.
    previous_secret: str | None = None
    rotation_until: float | None = Field(default=None, ge=0)
    # A delivery answered with a non-2xx or a network error is tried again this many times.
    retries: int = Field(default=2, ge=0, le=20)
    retry_delay: Dist = Dist.fixed(1.0)

    @model_validator(mode="after")
    def _secrets(self) -> Webhooks:
        _check_secret(self.secret)
        _check_secret(self.previous_secret)
        return self


# Tens of minutes for 2h and a couple of hours for 8h (scenario seconds); follow-ups a tenth
# of that or less. OpenAI publishes no figures: these only set the order of magnitude.
_LOGNORMAL = {"dist": "lognormal", "sigma": 0.6}
_WINDOW_DEFAULTS: dict[str, dict[str, Any]] = {
    "2h": {"queued": _LOGNORMAL | {"median": 1200.0}, "follow_up": _LOGNORMAL | {"median": 120.0}},
    "8h": {"queued": _LOGNORMAL | {"median": 7200.0}, "follow_up": _LOGNORMAL | {"median": 600.0}},
}


class Window(_Strict):
    """Queue delays of one discounted completion window (``background_options``).

    The API only promises completion within the window, so a draw past it is cut to what
    still leaves the work time inside it. A follow-up that reuses the window, continuation id
    and model is queued with priority: hence its own, shorter distribution.
    """

    queued: Dist
    follow_up: Dist


class Windows(_Strict):
    """The discounted windows' queue delays; ``soonest`` keeps ``lifecycle.queued``."""

    # Keys as the API spells the windows; populate_by_name lets replace() round-trip them.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    h2: Window = Field(default=Window.model_validate(_WINDOW_DEFAULTS["2h"]), alias="2h")
    h8: Window = Field(default=Window.model_validate(_WINDOW_DEFAULTS["8h"]), alias="8h")
    # Whether a response's body echoes its background_options: SDK 3.57's Response declares
    # no such field, so a client must not need it; turn on to check it tolerates the echo.
    echo: bool = False
    # The window a client following this scenario asks for (`runfleet bench` sends it); the
    # simulator serves every window whatever this says.
    client_window: Literal["soonest", "2h", "8h"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill(cls, data: Any) -> Any:
        # Setting one key of a window keeps the other's default, not a "field required".
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key, field_name in (("2h", "h2"), ("8h", "h8")):
            for name in (key, field_name):
                if isinstance(out.get(name), dict):
                    out[name] = _WINDOW_DEFAULTS[key] | out[name]
        return out


class Scenario(_Strict):
    """Everything the simulator needs to behave like one kind of account and workload."""

    name: str = "custom"
    description: str = ""
    seed: int = 0
    time_scale: float = Field(default=1.0, gt=0)
    api_key: str | None = None
    lifecycle: Lifecycle = Lifecycle()
    outcomes: Outcomes = Outcomes()
    tools: Tools = Tools()
    stalls: Stalls = Stalls()
    quota: Quota = Quota()
    tokens: TokenRules = TokenRules()
    poll_after_ms: float | None = Field(default=None, ge=0)
    faults: Faults = Faults()
    webhooks: Webhooks = Webhooks()
    windows: Windows = Windows()
    reply: str = "Simulated reply to: {prompt}"

    def replace(self, **changes: Any) -> Scenario:
        """Return a copy with top-level fields changed, validated like a file would be."""
        return _validate({**self.model_dump(by_alias=True), **changes}, self.name)


def _validate(data: Any, source: str) -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_one_line(exc, source)) from None


def _one_line(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    if err["type"] == "extra_forbidden":
        return f"scenario {source}: unknown key {where!r}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"scenario {source}: {where or 'top level'}: {msg}"


def load_scenario(spec: str | Path | dict[str, Any] | Scenario) -> Scenario:
    """Return a scenario from a built-in name, a JSON file path or a dict.

    Raises:
        ScenarioError: the name is unknown, the file unreadable, or a value impossible;
            the message is one line naming the offending key.
    """
    if isinstance(spec, Scenario):
        return spec
    if isinstance(spec, dict):
        return _validate(spec, "<dict>")
    text = str(spec)
    if text in BUILTIN_SCENARIOS:
        raw = resources.files("runfleet.sim").joinpath(f"scenarios/{text}.json").read_text()
        return _validate(json.loads(raw), text)
    path = Path(text)
    if not path.suffix and not path.exists():
        raise ScenarioError(
            f"scenario {text!r}: not a built-in ({', '.join(BUILTIN_SCENARIOS)}) nor a file"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"scenario {text}: cannot read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScenarioError(f"scenario {text}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario {text}: the top level must be a JSON object")
    data.setdefault("name", path.stem)
    return _validate(data, text)
