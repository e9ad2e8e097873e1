"""The SVG charts: round axes, one shape per value, gaps, legends, empty ranges, escaping."""

from __future__ import annotations

import re

import pytest

from avatars import charts
from avatars.charts import Series

LABELS = ["Dec 1", "Dec 2", "Dec 3"]


@pytest.mark.parametrize(
    ("highest", "top", "step"),
    [(0, 1, 0.25), (7, 8, 2), (1389, 1500, 500), (75.68, 80, 20), (0.12, 0.15, 0.05)],
)
def test_the_axis_top_is_a_round_number_at_or_above_the_highest_value(highest, top, step):
    assert charts.nice_top(highest) == pytest.approx((top, step))


def test_stacked_bars_draw_one_bar_per_value_above_zero_and_a_legend_entry_per_series():
    svg = charts.stacked_bars(
        "Outcomes",
        LABELS,
        [Series("ok", [3, 0, 1], "#0a0"), Series("failed", [1, 2, 0], "#a00")],
    )

    assert len(re.findall(r'<rect class="bar" data-series="ok"', svg)) == 2
    assert len(re.findall(r'<rect class="bar" data-series="failed"', svg)) == 2
    assert svg.count('<li><span class="swatch"') == 2
    assert "<title>Dec 1: failed 1</title>" in svg


def test_a_line_breaks_where_a_period_has_no_value():
    svg = charts.lines(
        "Waits", LABELS, [Series("p50", [40, None, 60], "#00a")], charts.format_seconds
    )

    assert svg.count("<polyline") == 2
    assert svg.count('<circle class="point"') == 2
    assert "<title>Dec 3: p50 60 s</title>" in svg


def test_a_range_without_data_says_so():
    svg = charts.stacked_bars("Refunds", LABELS, [Series("x", [0, 0, 0], "#000")])

    assert "No data in this range" in svg
    assert '<rect class="bar"' not in svg


def test_cost_and_credits_have_an_axis_each():
    svg = charts.bars_and_line(
        "Cost",
        LABELS,
        Series("cost", [1.5, 2, 0.5], "#0aa"),
        Series("credits", [30, 40, 10], "#a0a"),
        bar_format=charts.format_usd,
        line_format=charts.format_count,
    )

    assert 'class="axis left"' in svg and 'class="axis right"' in svg
    assert "<title>Dec 2: cost $2</title>" in svg and "<title>Dec 2: credits 40</title>" in svg


def test_a_ranking_draws_its_rows_in_the_order_given():
    svg = charts.ranking("Errors", [("timeout", 9), ("content_policy", 4)], "#a00")

    assert re.findall(r'data-series="(\w+)"', svg) == ["timeout", "content_policy"]
    assert charts.ranking("Errors", [], "#a00").count("None") == 1


def test_every_label_is_escaped():
    svg = charts.stacked_bars("<b>", ["<i>"], [Series("<script>x</script>", [1], "#000")])

    assert "<script>" not in svg and "<i>" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg


def test_a_count_axis_goes_up_in_whole_steps():
    svg = charts.stacked_bars("Refunds", LABELS, [Series("x", [1, 2, 0], "#000")])

    ticks = re.findall(
        r'<text x="\d+" y="[\d.]+">([^<]+)</text>', svg.split('class="axis bottom"')[0]
    )
    assert ticks == ["0", "1", "2", "3", "4"]
