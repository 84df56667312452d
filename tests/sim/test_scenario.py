"""Scenarios load strictly: a typo or an impossible value is one clear line, never a default."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from runfleet.sim.scenario import BUILTIN_SCENARIOS, Dist, ScenarioError, load_scenario
from runfleet.sim.world import World


@pytest.mark.parametrize("name", BUILTIN_SCENARIOS)
def test_builtin_scenarios_load_and_are_named(name: str) -> None:
    sc = load_scenario(name)
    assert sc.name == name
    assert sc.description


def test_tight_is_enforced_per_second_and_ample_is_not() -> None:
    assert load_scenario("tight").quota.window == 1
    assert load_scenario("ample").quota.rpm > 10 * load_scenario("tight").quota.rpm


def test_token_rules_default_to_no_limit_and_chars_over_four() -> None:
    sc = load_scenario("ample")
    assert sc.quota.tpm is None
    assert sc.tokens.rule == ("chars", 4.0)
    assert load_scenario({"tokens": {"estimate": "bytes/3.6"}}).tokens.rule == ("bytes", 3.6)


def test_tokens_scenario_binds_tokens_not_requests() -> None:
    """3000 RPM of its largest requests would need hundreds of times the tokens it has."""
    sc = load_scenario("tokens")
    assert sc.quota.tpm is not None
    largest = sc.tokens.prompts.high if sc.tokens.prompts else 0
    assert sc.quota.rpm * (largest + sc.tokens.default_max_output_tokens) > 100 * sc.quota.tpm
    assert largest + sc.tokens.default_max_output_tokens < sc.quota.tpm


def test_file_scenario_takes_its_name_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"quota": {"rpm": 60}, "lifecycle": {"in_progress": 2.5}}))
    sc = load_scenario(path)
    assert sc.name == "mine"
    assert sc.quota.rpm == 60
    assert sc.lifecycle.in_progress.draw(random.Random(0)) == 2.5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"quota": {"rpn": 5}}, "unknown key 'quota.rpn'"),
        ({"lifecycle": {"queud": 1}}, "unknown key 'lifecycle.queud'"),
        ({"quota": {"rpm": 0}}, "quota.rpm: Input should be greater than 0"),
        (
            {"faults": {"error_500": 1.5}},
            "faults.error_500: Input should be less than or equal to 1",
        ),
        ({"lifecycle": {"queued": {"dist": "gamma"}}}, "lifecycle.queued.dist"),
        ({"lifecycle": {"queued": {"dist": "uniform", "low": 3, "high": 1}}}, "below low"),
        ({"outcomes": {"failed": 0.7, "incomplete": 0.5}}, "failed + incomplete exceeds 1"),
        ({"time_scale": -1}, "time_scale"),
        ({"quota": {"tpm": 0}}, "quota.tpm: Input should be greater than 0"),
        ({"quota": {"tpm": "lots"}}, "quota.tpm: Input should be a valid number"),
        ({"quota": {"tpm": float("inf")}}, "quota.tpm: Input should be a finite number"),
        (
            {"tokens": {"estimate": "words/3"}},
            "tokens.estimate: expected 'chars/N' or 'bytes/N' with N > 0, got 'words/3'",
        ),
        ({"tokens": {"estimate": "chars/0"}}, "tokens.estimate: expected"),
        ({"tokens": {"estimate": "bytes"}}, "tokens.estimate: expected"),
        ({"tokens": {"default_max_output_tokens": 0}}, "tokens.default_max_output_tokens"),
        ({"tokens": {"output": {"dist": "uniform", "low": 9, "high": 1}}}, "tokens.output"),
        ({"tokens": {"estimat": "chars/4"}}, "unknown key 'tokens.estimat'"),
    ],
)
def test_bad_scenario_is_one_line_naming_the_key(
    tmp_path: Path, data: dict[str, object], message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert text.startswith(f"scenario {path}")


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "must be a JSON object"), (b"\xff\xfe", "JSON")],
)
def test_unreadable_scenario_file_is_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


def test_unknown_name_lists_the_builtins() -> None:
    with pytest.raises(
        ScenarioError,
        match="not a built-in \\(ample, faulty, overnight, strict, tight, tokens, tools\\)",
    ):
        load_scenario("amply")


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.json")


def test_replace_validates_like_a_file() -> None:
    sc = load_scenario("ample")
    assert sc.replace(time_scale=0.5).time_scale == 0.5
    with pytest.raises(ScenarioError, match="time_scale"):
        sc.replace(time_scale=0)


def test_lognormal_draws_centre_on_the_median() -> None:
    d = Dist(dist="lognormal", median=8.0, sigma=0.5)
    rng = random.Random(1)
    draws = sorted(d.draw(rng) for _ in range(4001))
    assert 7.5 < draws[2000] < 8.5
    assert all(x > 0 for x in draws)


def test_uniform_draws_stay_in_bounds() -> None:
    d = Dist(dist="uniform", low=1, high=3)
    rng = random.Random(2)
    assert all(1 <= d.draw(rng) <= 3 for _ in range(1000))


def test_same_seed_draws_the_same_values() -> None:
    d = Dist(dist="lognormal", median=2, sigma=1)
    a, b = random.Random(5), random.Random(5)
    assert [d.draw(a) for _ in range(10)] == [d.draw(b) for _ in range(10)]


def test_window_defaults_are_tens_of_minutes_for_2h_and_hours_for_8h() -> None:
    w = load_scenario("ample").windows
    assert 600 <= w.h2.queued.median <= 3600
    assert 3600 <= w.h8.queued.median <= 4 * 3600
    assert w.h2.follow_up.median < w.h2.queued.median
    assert w.h8.follow_up.median < w.h8.queued.median
    assert w.echo is False


def test_setting_one_window_key_keeps_the_others_and_survives_replace() -> None:
    sc = load_scenario({"windows": {"8h": {"queued": 100}}})
    assert sc.windows.h8.queued == Dist.fixed(100)
    assert sc.windows.h8.follow_up == load_scenario("ample").windows.h8.follow_up
    assert sc.replace(seed=3).windows == sc.windows


@pytest.mark.parametrize(
    ("windows", "match"),
    [
        ({"4h": {"queued": 1}}, "unknown key 'windows.4h'"),
        ({"2h": {"queue": 1}}, "unknown key 'windows.2h.queue'"),
        ({"8h": {"follow_up": -1}}, "windows.8h.follow_up"),
    ],
)
def test_bad_window_keys_are_one_line_errors(windows: dict[str, Any], match: str) -> None:
    with pytest.raises(ScenarioError, match=match) as info:
        load_scenario({"windows": windows})
    assert "\n" not in str(info.value)


def test_a_mixture_draws_each_part_by_its_weight() -> None:
    """70 % fast, 30 % ten times slower: a bimodal workload, as data."""
    mix = Dist.model_validate({"dist": "mixture", "parts": [4, 40], "weights": [0.7, 0.3]})
    rng = random.Random(1)
    draws = [mix.draw(rng) for _ in range(2000)]
    assert set(draws) == {4.0, 40.0}
    assert 0.27 < draws.count(40.0) / len(draws) < 0.33


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"dist": "mixture", "parts": [1, 2], "weights": [1]}, "one weight per part"),
        ({"dist": "mixture", "parts": [1], "weights": [0]}, "not all zero"),
    ],
)
def test_a_mixture_without_its_weights_is_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Dist.model_validate(data)


def test_drift_lengthens_the_runs_created_after_it() -> None:
    scenario = load_scenario(
        {"lifecycle": {"queued": 0, "in_progress": 4, "drift_after": 2, "drift_factor": 2}}
    )
    world = World(scenario)
    works = [(j.done_at - j.running_at) for j in (world.new_job(str(i), 0.0, expires=False)
                                                  for i in range(4))]  # fmt: skip
    assert works == [4.0, 4.0, 8.0, 8.0]
