"""The bench's pictures, drawn to real PNG files and read back from matplotlib's figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runfleet.bench.plot import plot_bench
from runfleet.bench.report import BenchResult

from .test_bench import PNG_MAGIC, fake_row

SETTINGS = {"scenario": "ample", "kind": "responses", "runs": 10, "in_flight": 5}


def drawn(tmp_path: Path, quota: float, per_second: int) -> tuple[Any, list[str]]:
    """Plot two strategies sending ``per_second`` and half as much for two minutes."""
    rows = [
        fake_row("classic", timeline=[per_second] * 120, latencies=[1.0, 2.0]),
        fake_row("fleet", timeline=[per_second // 2] * 120, latencies=[2.0, 3.0]),
    ]
    png = tmp_path / "bench.png"
    fig = plot_bench(BenchResult({**SETTINGS, "rpm": quota}, rows), png)
    assert png.read_bytes().startswith(PNG_MAGIC)
    rate = fig.axes[0]
    return rate, [t.get_text() for t in rate.texts] + rate.get_legend_handles_labels()[1]


def test_a_quota_far_above_use_is_named_and_the_panel_scaled_to_what_was_used(
    tmp_path: Path,
) -> None:
    rate, labels = drawn(tmp_path, quota=30000, per_second=5)  # busiest minute: 300
    bottom, top = rate.get_ylim()
    assert bottom == 0
    assert 300 < top < 600
    assert any("quota 30000 RPM" in label and "off scale" in label for label in labels)


@pytest.mark.parametrize("per_second", [10, 4])  # the quota reached; 40 % of it
def test_a_quota_near_use_is_drawn_as_a_line_in_the_panel(tmp_path: Path, per_second: int) -> None:
    rate, labels = drawn(tmp_path, quota=600, per_second=per_second)
    assert "quota" in labels
    assert rate.get_ylim()[0] == 0
    assert rate.get_ylim()[1] >= 600
