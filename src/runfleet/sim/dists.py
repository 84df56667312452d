"""Duration distributions a scenario draws from: fixed, lognormal, uniform, and mixtures of them.

Real run times are not one lognormal: small models answer in a second, reasoning models in
minutes, and a workload that mixes both is bimodal. A ``mixture`` draws one of its ``parts``
with the given ``weights``, so a scenario can describe such a workload as data.
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Dist", "Strict"]


class Strict(BaseModel):
    """A scenario part: unknown keys are refused and values never change once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Dist(Strict):
    """A duration distribution: ``fixed`` value, ``lognormal`` (median, sigma), ``uniform``, or a
    ``mixture`` of ``parts`` drawn with ``weights``."""

    dist: Literal["fixed", "lognormal", "uniform", "mixture"] = "fixed"
    value: float = Field(default=0.0, ge=0)
    median: float = Field(default=1.0, gt=0)
    sigma: float = Field(default=0.0, ge=0, le=5)
    low: float = Field(default=0.0, ge=0)
    high: float = Field(default=0.0, ge=0)
    parts: tuple[Dist, ...] = ()
    weights: tuple[float, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _number_is_fixed(cls, data: Any) -> Any:
        # A bare number is the common case; accepting it keeps scenario files short.
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {"dist": "fixed", "value": data}
        return data

    @model_validator(mode="after")
    def _bounds(self) -> Dist:
        if self.dist == "uniform" and self.high < self.low:
            raise ValueError(f"uniform high ({self.high:g}) is below low ({self.low:g})")
        if self.dist == "mixture":
            if not self.parts or len(self.weights) != len(self.parts):
                raise ValueError("a mixture needs parts and one weight per part")
            if any(w < 0 for w in self.weights) or not sum(self.weights) > 0:
                raise ValueError("mixture weights must be non-negative and not all zero")
        return self

    def draw(self, rng: random.Random) -> float:
        """Draw one value from the injected RNG so a seed reproduces a whole scenario."""
        if self.dist == "fixed":
            return self.value
        if self.dist == "uniform":
            return rng.uniform(self.low, self.high)
        if self.dist == "mixture":
            return rng.choices(self.parts, self.weights)[0].draw(rng)
        return self.median * math.exp(rng.gauss(0.0, self.sigma)) if self.sigma else self.median

    @classmethod
    def fixed(cls, value: float) -> Dist:
        """Return a distribution that always yields ``value``."""
        return cls(dist="fixed", value=value)
