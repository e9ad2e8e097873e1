"""The dashboard, timed, in a process with the service's settings (bench/dashboard.py seeds).

`python -m bench.dashboard_pass --out FILE`: for each range, a first visit (no period kept yet:
it aggregates the whole range and keeps the periods that are over), then `REPEATS` visits as
every later one is: each query's time by panel, the provider's Redis reads, the whole page as a
staff member's request renders it (median of the repeats), and EXPLAIN ANALYZE of each query.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPEATS = 7
# Which panel a query serves, by what its SQL reads (first match wins).
PANELS = [
    ("periods kept (rollup read)", "avatars_dashboardrollup"),
    ("p50 / p95 time to an image", "PERCENTILE_CONT"),
    ("outcomes, cost, error codes", '"avatars_avatar"."error_code"'),
    ("credits spent", "credits_ledgerentry"),
    ("refunds by reason", "credits_compensation"),
    ("open alerts", "avatars_alert"),
    ("generations in flight", "avatars_avatar"),
]


def _panel_of(sql: str) -> str:
    return next((name for name, marker in PANELS if marker in sql), "other")


def _visit(span_key: str) -> tuple[float, dict[str, float], list[tuple[str, tuple]]]:
    """One collect_dashboard: its time, each panel's query time, the queries it sent."""
    from django.db import connection

    from avatars import dashboard

    sent: list[tuple[str, tuple, float]] = []

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            sent.append((sql, params, (time.perf_counter() - started) * 1000))

    with connection.execute_wrapper(timed):
        started = time.perf_counter()
        dashboard.collect_dashboard(span_key=span_key)
        elapsed = (time.perf_counter() - started) * 1000
    panels: dict[str, float] = {}
    for sql, _, ms in sent:
        panels[_panel_of(sql)] = panels.get(_panel_of(sql), 0.0) + ms
    return elapsed, panels, [(sql, params) for sql, params, _ in sent]


def _explain(sql: str, params: tuple) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def _page_ms(client, span_key: str) -> float:
    started = time.perf_counter()
    response = client.get("/admin/dashboard/", {"range": span_key})
    assert response.status_code == 200, response.status_code
    return (time.perf_counter() - started) * 1000


def _provider_ms() -> float:
    from avatars import dashboard

    started = time.perf_counter()
    dashboard.read_provider_state()
    return (time.perf_counter() - started) * 1000


def _time_span(span_key: str, client) -> dict:
    first_ms, first_panels, _ = _visit(span_key)
    visits = [_visit(span_key) for _ in range(REPEATS)]
    names = list(dict.fromkeys(name for _, panels, _ in visits for name in panels))
    return {
        "first_visit_ms": first_ms,
        "first_visit_panels": first_panels,
        "total_ms": statistics.median(v[0] for v in visits),
        "panels": {n: statistics.median(v[1].get(n, 0.0) for v in visits) for n in names},
        "queries": len(visits[-1][2]),
        "provider_ms": statistics.median(_provider_ms() for _ in range(REPEATS)),
        "page_ms": statistics.median(_page_ms(client, span_key) for _ in range(REPEATS)),
        "plans": [
            {"panel": _panel_of(sql), "plan": _explain(sql, params)}
            for sql, params in visits[-1][2]
            if sql.lstrip().upper().startswith("SELECT")
        ],
    }


def run_pass() -> dict:
    from django.contrib.auth import get_user_model
    from django.test import Client

    staff = get_user_model().objects.create_user(username="bench-staff", is_staff=True)
    client = Client()
    client.force_login(staff)
    _page_ms(client, "48h")  # templates loaded and compiled once, as in a running server
    from avatars.models import DashboardRollup

    DashboardRollup.objects.all().delete()
    return {key: _time_span(key, client) for key in ("48h", "30d")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_pass")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    args.out.write_text(json.dumps(run_pass()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
