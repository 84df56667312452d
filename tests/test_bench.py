"""``runfleet bench``: strategy specs, settings checks, and whole benches against the simulator.

The benches are real: ``run_bench`` starts ``runfleet sim`` in a child process and every
strategy talks to it with the real SDK over loopback. The scenarios are tiny and scaled down
(a run lasts about 3.5 scenario seconds, a twentieth of that in real time), so that a whole
table takes a few seconds; each bench is run once and checked for several things.
"""

from __future__ import annotations

import dataclasses
import json
import math
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from runfleet.bench import (
    BenchConfig,
    BenchError,
    BenchResult,
    StrategyRow,
    StrategySpec,
    parse_strategies,
    run_bench,
)
from runfleet.bench.report import RATIO_FIELDS
from runfleet.bench.strategy import classic_backoff
from runfleet.cli import main
from runfleet.sim.server import serve_asgi
from runfleet.sim.stats import percentile

from .helpers import StartSim

# A run: queued about 0.5 s, then in progress about 3 s (scenario seconds); an ample quota.
TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 11,
    "time_scale": 0.05,
    "lifecycle": {
        "queued": {"dist": "lognormal", "median": 0.5, "sigma": 0.5},
        "in_progress": {"dist": "lognormal", "median": 3.0, "sigma": 0.5},
    },
    "quota": {"rpm": 3000, "window": 1},
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# naive's and classic's timeout where no run should be lost: 10 s real, room for a busy machine.
ROOMY = 200.0


def scenario_file(tmp_path: Path, name: str = "tiny", **changes: Any) -> Path:
    """Write TINY with top-level ``changes`` as a scenario file; return its path."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**TINY, "name": name, **changes}))
    return path


def row_line(result: BenchResult, label: str) -> str:
    """Return the table line of the strategy ``label``."""
    return next(line for line in result.table().splitlines() if line.startswith(f"| {label} |"))


def check_row(row: StrategyRow) -> None:
    """Check what holds for every row, whatever the strategy did."""
    assert row.ok + row.failed + row.lost == row.runs
    assert row.requests >= row.polls >= 0
    seen = row.ok + row.failed
    if seen:
        assert row.requests_per_run == pytest.approx(row.requests / seen)
        assert row.polls_per_run == pytest.approx(row.polls / seen)
    # Every request the simulator counted lands in one second of the timeline.
    assert sum(row.timeline) == row.requests
    assert row.peak_window <= row.requests
    assert row.over_quota == (row.peak_window > row.quota)
    # The percentiles are the simulator's, over the same latencies the row carries.
    assert row.latencies == sorted(row.latencies)
    assert row.p50 == percentile(row.latencies, 0.5)
    assert row.p95 == percentile(row.latencies, 0.95)
    assert row.max == (row.latencies[-1] if row.latencies else None)


# --- strategy specs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "labels"),
    [
        ("responses", ["naive", "classic", "fixed2s", "fleet"]),
        ("assistants", ["naive", "classic", "fixed2s", "sdk", "fleet"]),
    ],
)
def test_no_strategies_means_every_one_that_applies_to_the_kind(
    kind: str, labels: list[str]
) -> None:
    specs = parse_strategies(None, kind)
    assert [s.label for s in specs] == labels
    assert all(not s.options for s in specs)


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        (
            "naive,classic,fleet:latency=2s,webhooks,drop=20%",
            ["naive", "classic", "fleet:latency=2s,webhooks,drop=0.2"],
        ),
        ("classic:initial=250ms,cap=2s", ["classic:initial=250ms,cap=2s"]),
        ("classic:factor=2", ["classic:factor=2"]),
        ("fleet:latency=.5s", ["fleet:latency=500ms"]),
        ("fleet:latency=2", ["fleet:latency=2s"]),  # a bare number is seconds
        ("fleet:fraction=0.9", ["fleet:fraction=0.9"]),
        ("fleet:webhooks,safety=5s", ["fleet:webhooks,safety=5s"]),
        ("fleet:comb,latency=2s", ["fleet:comb,latency=2s"]),
        ("fleet:", ["fleet"]),
        ("naive; classic", ["naive", "classic"]),
        ("naive classic", ["naive", "classic"]),
        (" naive , classic ", ["naive", "classic"]),
        ("classic,classic:cap=10s", ["classic", "classic:cap=10s"]),
        ("classic,cookbook,fleet", ["classic", "cookbook", "fleet"]),
    ],
)
def test_strategies_parse_to_labels(text: str, labels: list[str]) -> None:
    assert [s.label for s in parse_strategies(text, "responses")] == labels


def test_settings_are_kept_as_numbers_in_scenario_seconds() -> None:
    (spec,) = parse_strategies("fleet:latency=500ms,webhooks,drop=20%,safety=3s", "responses")
    assert spec == StrategySpec(
        "fleet", {"latency": 0.5, "webhooks": True, "drop": 0.2, "safety": 3.0}
    )
    assert spec.number("latency", 9.0) == 0.5
    assert spec.number("fraction", 0.8) == 0.8


@pytest.mark.parametrize(
    ("text", "delays"),
    [
        ("classic", [0.5, 0.75, 1.125, 1.6875, 2.53125, 3.796875, 5.0, 5.0]),
        ("classic:initial=250ms,factor=2,cap=1s", [0.25, 0.5, 1.0, 1.0]),
    ],
)
def test_classic_sleeps_the_classic_loops_delays_without_jitter(
    text: str, delays: list[float]
) -> None:
    (spec,) = parse_strategies(text, "responses")
    backoff = classic_backoff(spec)

    assert [backoff.base_delay(attempt) for attempt in range(len(delays))] == delays
    assert (backoff.jitter, backoff.min_interval) == (0.0, 0.0)


def test_a_label_parses_back_to_its_spec() -> None:
    specs = parse_strategies("classic:initial=1s,cap=10s,fleet:latency=2s,webhooks", "responses")
    again = parse_strategies(",".join(s.label for s in specs), "responses")
    assert again == specs


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("clasic", "responses", "unknown strategy 'clasic': choose from naive, classic"),
        ("Classic", "responses", "unknown strategy 'Classic'"),
        ("fleet:speed=2s", "responses", "unknown setting 'speed' (settings: latency, fraction"),
        ("naive:latency=2s", "responses", "unknown setting 'latency' (settings: none)"),
        ("fleet:latency=2m", "responses", "latency must be a duration of at least 1ms"),
        ("fleet:latency=0s", "responses", "latency must be a duration of at least 1ms"),
        ("fleet:latency=-1s", "responses", "latency must be a duration of at least 1ms"),
        ("fleet:latency", "responses", "latency needs a value, e.g. latency=2s"),
        ("fleet:webhooks=yes", "responses", "webhooks takes no value"),
        ("sdk", "responses", "strategy 'sdk' needs --kind assistants"),
        ("fleet:webhooks", "assistants", "needs --kind responses: OpenAI sends no webhooks"),
        ("fleet:drop=20%", "responses", "drop and safety only apply with webhooks"),
        ("fleet:safety=5s", "responses", "drop and safety only apply with webhooks"),
        ("classic,classic", "responses", "strategy 'classic' is given twice"),
        ("fleet:latency=1s,fleet:latency=1000ms", "responses", "'fleet:latency=1s' is given twice"),
        ("fleet:latency=2s,latency=3s", "responses", "latency is given twice"),
        ("", "responses", "no strategy given"),
        (" ;, ", "responses", "no strategy given"),
        ("fleet:webhooks,drop=120%", "responses", "drop must be a fraction from 0 to 1"),
        ("fleet:webhooks,drop=-0.1", "responses", "drop must be a fraction from 0 to 1"),
        ("fleet:webhooks,drop=lots", "responses", "drop must be a fraction from 0 to 1"),
        ("fleet:fraction=nan", "responses", "fraction must be a fraction from 0 to 1"),
        ("classic:factor=0.5", "responses", "factor must be a number >= 1"),
        ("classic:factor=inf", "responses", "factor must be a number >= 1"),
        ("classic:initial=2s,cap=1s", "responses", "cap (1s unless given) is below initial"),
        ("fleet,webhooks", "responses", "put its settings after a colon, e.g. fleet:webhooks"),
    ],
)
def test_a_bad_strategy_is_refused_in_one_line(text: str, kind: str, message: str) -> None:
    with pytest.raises(BenchError) as info:
        parse_strategies(text, kind)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)  # callers that catch ValueError still do


def test_a_misspelt_strategy_after_another_is_named_unknown() -> None:
    with pytest.raises(BenchError, match="unknown strategy 'clasic'"):
        parse_strategies("naive,clasic", "responses")


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"runs": 0}, "--runs must be at least 1, got 0"),
        ({"in_flight": 0}, "--in-flight must be at least 1, got 0"),
        (
            {"scenario": "nope"},
            "scenario 'nope': not a built-in "
            "(ample, faulty, overnight, strict, tight, tokens, tools)",
        ),
        ({"scenario": "missing.json"}, "scenario missing.json: cannot read"),
        ({"kind": "chat"}, "kind must be 'responses' or 'assistants', not 'chat'"),
        ({"timeout": 0.0}, "--timeout must be a positive number of seconds"),
        ({"limit": math.inf}, "--limit must be a positive number of seconds"),
        ({"time_scale": math.nan}, "--time-scale must be a positive number"),
        ({"time_scale": -1.0}, "--time-scale must be a positive number"),
        ({"strategies": "sdk"}, "strategy 'sdk' needs --kind assistants"),
    ],
)
def test_a_bad_setting_is_refused_in_one_line(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(BenchError) as info:
        BenchConfig(**changes).check()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_bad_value_in_the_scenario_file_is_refused(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, quota={"rpm": 0})
    with pytest.raises(BenchError, match=r"quota\.rpm"):
        BenchConfig(scenario=path).check()


def test_check_applies_time_scale_and_seed(tmp_path: Path) -> None:
    scenario, specs = BenchConfig(
        scenario=scenario_file(tmp_path), time_scale=0.5, seed=99, strategies="classic"
    ).check()
    assert (scenario.name, scenario.time_scale, scenario.seed) == ("tiny", 0.5, 99)
    assert specs == (StrategySpec("classic"),)


async def test_a_bad_setting_sends_no_request() -> None:
    # An unreachable base_url would fail later; the setting is refused first.
    with pytest.raises(BenchError, match="--runs"):
        await run_bench(BenchConfig(runs=0, base_url="http://127.0.0.1:9"))


# --- whole benches ----------------------------------------------------------------------------


async def test_every_strategy_is_measured_by_the_simulator(tmp_path: Path) -> None:
    """One bench over all responses strategies; the table's invariants hold on every row."""
    strategies = "naive,classic,fixed2s,fleet,fleet:webhooks,fleet:webhooks,drop=50%,safety=5s"
    labels = [
        "naive",
        "classic",
        "fixed2s",
        "fleet",
        "fleet:webhooks",
        "fleet:webhooks,drop=0.5,safety=5s",
    ]
    seen: list[str] = []
    cfg = BenchConfig(
        scenario=scenario_file(tmp_path), runs=24, in_flight=8, strategies=strategies, timeout=ROOMY
    )
    result = await run_bench(cfg, on_row=lambda row: seen.append(row.strategy))

    assert seen == [r.strategy for r in result.rows] == labels
    rows = {r.strategy: r for r in result.rows}
    for row in result.rows:
        check_row(row)
        assert (row.runs, row.ok) == (24, 24)  # ample quota, no failures: nothing is lost
        assert row.quota_errors == 0
        assert row.quota == 3000
        assert row.polls > 0
        assert len(row.latencies) == row.ok  # one client-needed moment per run, no tools
        assert row.wall > 0

    classic = rows["classic"]
    assert result.baseline() is classic
    assert all(v in (1.0, None) for v in result.ratios(classic).values())
    naive = result.ratios(rows["naive"])
    naive_polls, classic_polls = rows["naive"].polls_per_run, classic.polls_per_run
    assert naive_polls is not None
    assert classic_polls is not None
    assert naive["polls_per_run"] == pytest.approx(naive_polls / classic_polls)

    # Webhooks: one poll per run once told, far fewer than the classic loop's.
    hooked = rows["fleet:webhooks"]
    assert hooked.polls_per_run is not None
    assert hooked.polls_per_run < classic_polls
    assert hooked.extra["receiver"]["received"] >= 24  # a slow answer may be delivered twice
    # Half the deliveries dropped for good: the safety-net poll still finds every run.
    dropped = rows["fleet:webhooks,drop=0.5,safety=5s"]
    assert 0 < dropped.extra["receiver"]["received"] < 24
    assert "receiver" not in rows["fleet"].extra

    s = result.settings
    assert (s["scenario"], s["kind"], s["runs"], s["in_flight"]) == ("tiny", "responses", 24, 8)
    assert (s["time_scale"], s["rpm"], s["quota_window"], s["seed"]) == (0.05, 3000, 1, 11)
    assert s["strategies"] == labels
    assert {"cpu", "cores", "python", "openai"} <= s["machine"].keys()
    assert result.heading().startswith("tiny scenario, responses: 24 runs per strategy")

    lines = result.table().splitlines()
    assert len(lines) == 2 + len(labels)
    assert lines[0].startswith("| strategy | ok / failed / lost |")
    assert lines[1] == "|---" * 10 + "|"
    for line, label in zip(lines[2:], labels, strict=True):
        assert line.startswith(f"| {label} | 24 / 0 / 0 |")
        assert line.count("|") == 11
        assert "**" not in line  # nothing lost, nothing over the quota
    assert "(1.00x)" in row_line(result, "classic")

    data = json.loads(json.dumps(result.data()))
    assert data["settings"] == json.loads(json.dumps(s))
    assert [r["strategy"] for r in data["rows"]] == labels
    for item, row in zip(data["rows"], result.rows, strict=True):
        assert set(item.pop("ratios")) == set(RATIO_FIELDS)
        assert StrategyRow(**item) == row


async def test_a_strategy_that_loses_runs_is_shown_losing_them(tmp_path: Path) -> None:
    """One request per scenario second: ``naive`` gets 429s beyond the SDK's two retries."""
    path = scenario_file(tmp_path, "starved", quota={"rpm": 60, "window": 1})
    cfg = BenchConfig(scenario=path, runs=16, in_flight=8, strategies="naive", timeout=5)
    result = await run_bench(cfg)

    (row,) = result.rows
    check_row(row)
    assert row.lost > 0
    assert row.quota_errors > 0
    line = row_line(result, "naive")
    assert f"/ **{row.lost}** |" in line
    # Whether 429s still crowd more than 60 requests into one minute depends on timing.
    assert ("**over**" in line) == row.over_quota
    # No classic row: no ratios, and the figures are shown bare.
    assert result.baseline() is None
    assert set(result.ratios(row).values()) == {None}
    assert "x)" not in line


async def test_runs_past_the_limit_count_as_lost(tmp_path: Path) -> None:
    """Every run lasts 3.5 s; a 1 s limit loses them all, even for loops with no timeout."""
    path = scenario_file(tmp_path, "slow", lifecycle={"queued": 0.5, "in_progress": 3.0})
    cfg = BenchConfig(scenario=path, runs=6, in_flight=3, strategies="fixed2s,fleet", limit=1)
    result = await run_bench(cfg)

    for row in result.rows:
        check_row(row)
        assert (row.ok, row.failed, row.lost) == (0, 0, 6)
        assert row.latencies == []
        assert (row.p50, row.p95, row.max) == (None, None, None)
        assert f"| {row.strategy} | 0 / 0 / **6** |" in result.table()
    # The fleet says why it gave up on them: its deadline cancelled each one.
    [(why, lost)] = result.rows[1].extra["lost_because"].items()
    assert why.startswith("RunTimeout: no result within ")
    assert lost == 6
    fixed2s = result.rows[0]
    assert fixed2s.requests <= 6  # its creates at most: given up during its first 2 s sleep
    assert fixed2s.polls == 0


async def test_no_run_seen_to_its_end_has_no_per_run_figure(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "slow", lifecycle={"queued": 0.5, "in_progress": 3.0})
    cfg = BenchConfig(scenario=path, runs=4, in_flight=4, strategies="fixed2s", limit=1)
    (row,) = (await run_bench(cfg)).rows
    assert row.ok + row.failed == 0
    assert row.requests_per_run is None
    assert row.polls_per_run is None
    assert f"| {row.strategy} | 0 / 0 / **4** | - | - |" in (await run_bench(cfg)).table()


async def test_assistants_with_tool_rounds_end_ok_with_every_loop(tmp_path: Path) -> None:
    """Every run asks for one tool call once; the SDK helpers and the fleet both answer it."""
    path = scenario_file(
        tmp_path, "tooled", tools={"probability": 1, "rounds": 1, "calls_per_round": 1}
    )
    cfg = BenchConfig(
        scenario=path,
        runs=10,
        in_flight=5,
        kind="assistants",
        strategies="classic,sdk,fleet",
        timeout=ROOMY,
    )
    result = await run_bench(cfg)

    assert [r.strategy for r in result.rows] == ["classic", "sdk", "fleet"]
    for row in result.rows:
        check_row(row)
        assert (row.ok, row.failed, row.lost) == (10, 0, 0)
        assert row.polls > 0
        # Each run needed the client twice: for its tool call, then for its result.
        assert len(row.latencies) == 20
        # create, submit and the reply's message list at least, besides the polls.
        assert row.requests >= row.polls + 3 * 10


async def test_a_simulator_started_elsewhere_is_judged_by_its_own_record(
    tmp_path: Path, start_sim: StartSim
) -> None:
    async with start_sim("ample") as sim:
        cfg = BenchConfig(
            scenario=scenario_file(tmp_path),
            runs=8,
            in_flight=4,
            strategies="classic",
            timeout=ROOMY,
            base_url=sim.base_url,
        )
        (row,) = (await run_bench(cfg)).rows
        stats = sim.stats(per_run=True)

    check_row(row)
    assert stats["scenario"] == "tiny"  # the bench reset it with its own scenario
    assert row.requests == stats["requests_total"]
    assert row.polls == stats["requests"]["responses.retrieve"]
    assert len(row.latencies) == stats["responses"]["detection"]["count"] == 8


async def test_an_unreachable_simulator_is_one_line() -> None:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = BenchConfig(scenario="ample", runs=1, base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(BenchError, match=f"cannot reach the simulator at http://127.0.0.1:{port}:"):
        await run_bench(cfg)


async def test_a_server_that_is_not_the_simulator_is_refused() -> None:
    async def not_a_sim(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with serve_asgi(not_a_sim) as port:
        cfg = BenchConfig(scenario="ample", runs=1, base_url=f"http://127.0.0.1:{port}")
        with pytest.raises(BenchError, match="has no /_sim/stats: the bench needs `runfleet sim`"):
            await run_bench(cfg)


# --- the command line -------------------------------------------------------------------------


@pytest.fixture
def cli() -> Iterator[None]:
    """Undo the logging setup ``main`` does, so that it does not outlive the test's capture."""
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("cli")
def test_cli_prints_the_table_and_writes_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    status = main(
        [
            "bench",
            "--scenario",
            str(scenario_file(tmp_path)),
            "--runs",
            "8",
            "--in-flight",
            "4",
            "--strategies",
            "classic,fleet",
            "--timeout",
            "200",
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("tiny scenario, responses: 8 runs per strategy, at most 4")
    assert lines[1].startswith("| strategy |")
    assert [line.split(" | ")[0] for line in lines[3:]] == ["| classic", "| fleet"]
    assert len(lines) == 5
    assert "runfleet bench: classic: 8/8 runs seen to their end" in err
    assert "runfleet bench: fleet: 8/8 runs seen to their end" in err

    data = json.loads(out_json.read_text())
    assert (data["settings"]["runs"], data["settings"]["timeout"]) == (8, 200)
    assert data["settings"]["strategies"] == ["classic", "fleet"]
    assert [r["strategy"] for r in data["rows"]] == ["classic", "fleet"]
    assert all(r["ok"] == 8 for r in data["rows"])
    assert out_png.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.usefixtures("cli")
def test_cli_frontier_draws_polls_against_latency(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_png = tmp_path / "frontier.png"
    status = main(
        [
            "bench",
            "--scenario",
            str(scenario_file(tmp_path)),
            "--runs",
            "6",
            "--in-flight",
            "3",
            "--frontier",
            "--strategies",
            "classic,fleet:latency=1s",
            "--plot",
            str(out_png),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "| fleet:latency=1s |" in out
    assert out_png.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.usefixtures("cli")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "sdk"], "runfleet bench: strategy 'sdk' needs --kind assistants"),
        (["--scenario", "nope"], "runfleet bench: scenario 'nope': not a built-in"),
        (["--runs", "0"], "runfleet bench: --runs must be at least 1, got 0"),
        (["--in-flight", "0"], "runfleet bench: --in-flight must be at least 1, got 0"),
        (
            ["--kind", "assistants", "--strategies", "fleet:webhooks"],
            "runfleet bench: strategy 'fleet:webhooks' needs --kind responses",
        ),
    ],
)
def test_cli_refuses_bad_input_in_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "bench.json"
    status = main(["bench", *args, "--json", str(out_json)])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert err.startswith(message)
    assert len(err.strip().splitlines()) == 1
    assert not out_json.exists()


def fake_row(strategy: str, **figures: Any) -> StrategyRow:
    """Return a made-up row: 10 runs ok, 4 requests and 3 polls each, seen after 1 s."""
    fields: dict[str, Any] = {
        "runs": 10, "ok": 10, "failed": 0, "lost": 0, "requests": 40, "requests_per_run": 4.0,
        "polls": 30, "polls_per_run": 3.0, "quota_errors": 0, "peak_window": 40, "quota": 60.0,
        "p50": 1.0, "p95": 2.0, "max": 3.0, "wall": 5.0,
    }  # fmt: skip
    return StrategyRow(strategy, **(fields | figures))


def test_the_table_marks_lost_runs_and_a_quota_overrun_in_bold() -> None:
    result = BenchResult(
        {},
        [
            fake_row("classic"),
            fake_row("naive", ok=7, lost=3, requests=140, requests_per_run=20.0, polls_per_run=6.0,
                quota_errors=12, peak_window=90, p50=None, p95=None, max=None),
        ],
    )  # fmt: skip
    classic, naive = result.table().splitlines()[2:]
    assert classic == (
        "| classic | 10 / 0 / 0 | 4.00 (1.00x) | 3.00 (1.00x) | 0 (1.00x) | 40 / 60 "
        "| 1.00 (1.00x) | 2.00 (1.00x) | 3.0 (1.00x) | 5 (1.00x) |"
    )
    assert naive == (
        "| naive | 7 / 0 / **3** | 20.00 (5.00x) | 6.00 (2.00x) | 12 | 90 / 60 **over** "
        "| - | - | - | 5 (1.00x) |"
    )
    # No 429s for classic: a ratio to zero is undefined, and shown as the bare figure.
    ratios = result.ratios(result.rows[1])
    assert (ratios["quota_errors"], ratios["p50"], ratios["wall"]) == (None, None, 1.0)


def test_a_row_is_frozen() -> None:
    made = fake_row("classic")
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.ok = 2  # type: ignore[misc]


def test_the_token_columns_show_where_tokens_are_limited() -> None:
    """Tokens used, token 429s (after the first minute), peak against the limit, use."""
    plain = BenchResult({}, [fake_row("classic")])
    assert "token" not in plain.table()
    tokens = {"tokens_used": 2_354_340, "token_429s": 7, "token_429s_late": 2,
              "token_peak": 41_000, "token_limit": 40_000.0,
              "token_utilisation": 0.912}  # fmt: skip
    table = BenchResult({}, [fake_row("classic", **tokens)]).table().splitlines()
    assert table[0].endswith(
        "| tokens used | token 429s (after 1st min) | token peak 60 s / limit | token utilisation |"
    )
    assert table[1] == "|---" * 14 + "|"
    assert table[2].endswith("| 2354340 | 7 (2) | 41000 / 40000 **over** | 91% |")


async def test_the_cookbook_budgets_requests_and_tokens_and_pauses_on_429(tmp_path: Path) -> None:
    """Prompts of 50-400 tokens against 40,000 TPM (1 s windows); the cookbook counts 15
    output tokens where the server reserves 1,000, so it meets 429s, and pauses for them.
    (The fleet on the same account: ``tests/test_fleet_tokens.py``.)"""
    path = scenario_file(
        tmp_path, "tok", quota={"rpm": 3000, "tpm": 40_000, "window": 1},
        tokens={"prompts": {"dist": "uniform", "low": 50, "high": 400},
                "default_max_output_tokens": 1000, "output": 100},
    )  # fmt: skip
    cfg = BenchConfig(scenario=path, runs=10, in_flight=10, strategies="cookbook")
    result = await run_bench(cfg)
    (cookbook,) = result.rows
    check_row(cookbook)
    assert cookbook.token_limit == 40_000
    assert cookbook.tokens_used > 10 * 150  # the prompts and outputs of the runs it started
    assert sum(cookbook.token_timeline) == cookbook.tokens_used
    assert cookbook.token_429s > 0
    assert cookbook.wall > 15 * 0.05  # it paused 15 scenario seconds at least once
    assert result.settings["tpm"] == 40_000
