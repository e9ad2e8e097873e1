"""The Markdown report: one table per benchmark, ratios, and the issue's targets checked."""

from __future__ import annotations

import math
import re
from collections import Counter

import psutil

from bench.measure import percentile
from bench.pipeline import (
    CREATES_BURST,
    CREATES_PER_MINUTE,
    NOT_API,
    StageResult,
    overhead_verdict,
)

MB = 2**20


def _f(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}{suffix}"


def _percentiles(values: list[float]) -> str:
    return " / ".join(_f(percentile(values, q), 2) for q in (50, 95, 99))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _pipeline(results: list[StageResult]) -> list[str]:
    if not results:
        return []
    first = results[0]
    out = [
        "## 1–2. Pipeline and blocking baseline",
        "",
        f"N = {first.n} avatars per run; {first.settings.describe()}. Overhead = time the "
        "API first answered `succeeded` minus the simulator's planned completion of the "
        "avatar's (last) prediction; in flight = predictions running at the simulator at once.",
        "",
    ]
    header = [
        "run",
        "worker",
        "L s",
        "succeeded",
        "POSTs done / last create s",
        "wall s",
        "completions/s",
        "in flight (peak)",
        "overhead p50 / p95 / p99 s",
        "p95 bar",
        "Replicate API calls/avatar",
        "worker CPU ms/avatar",
        "worker DB queries/avatar",
        "worker peak RSS MB",
    ]
    rows = []
    for r in results:
        worker = r.probe.get("worker", Counter())
        rows.append(
            [
                r.label,
                f"{r.settings.pool} × {r.settings.concurrency}",
                _f(r.latency, 0),
                f"{r.succeeded}/{r.accepted}"
                + (f" ({dict(r.statuses)})" if r.succeeded != r.accepted else ""),
                f"{_f(r.submit_seconds, 1)} / {_f(r.last_create, 1)}",
                _f(r.wall, 1),
                _f(r.completions_per_s, 2),
                str(r.inflight_peak),
                _percentiles(r.overhead),
                overhead_verdict(r).replace("missed", "**missed**") or "–",
                _f(r.per_avatar(r.api_calls), 2),
                _f(r.per_avatar(r.cpu.get("worker", 0.0)) * 1000, 1),
                _f(r.per_avatar(worker.get("queries", 0)), 1),
                _f(r.peak_rss.get("worker", 0) / MB, 0),
            ]
        )
    out += _table(header, rows)
    out += _pacing(results)
    baseline = next((r for r in results if r.mode == "baseline"), None)
    if baseline and baseline.completions_per_s > 0:
        per_slot = baseline.completions_per_s / baseline.settings.concurrency
        out += [
            "",
            "Throughput against the blocking baseline (completions/s ÷ the baseline's). The "
            f"baseline ran with {baseline.settings.concurrency} threads, "
            f"{per_slot:.4f} completions/s per thread (≈ 1/L: one generation per slot at a time); "
            "for a run with another concurrency the baseline is scaled to it (marked *derived*):",
            "",
        ]
        for r in results:
            if r.mode == "baseline" or r.latency != baseline.latency:
                continue
            same = r.settings.concurrency == baseline.settings.concurrency
            ratio = r.completions_per_s / (per_slot * r.settings.concurrency)
            note = "" if same else f" (*derived*: baseline × {r.settings.concurrency}/"
            note += "" if same else f"{baseline.settings.concurrency})"
            out.append(f"- **{r.label}: {ratio:.1f}×** a blocking worker of the same size{note}")
    # Detail: calls by endpoint, web side, lateness, database.
    endpoints = sorted({e for r in results for e in r.calls})
    out += [
        "",
        "Requests to the simulator per avatar, by endpoint (`output`: image download "
        "from the delivery host, not an API call):",
        "",
    ]
    out += _table(
        ["run", *endpoints, "HTTP errors", "webhooks ok / failed"],
        [
            [
                r.label,
                *[_f(r.per_avatar(r.calls.get(e, 0)), 2) for e in endpoints],
                str(r.call_errors),
                f"{r.webhooks.get('ok', 0)} / {r.webhooks.get('failed', 0)}",
            ]
            for r in results
        ],
    )
    out += ["", "Where the work is done, per avatar:", ""]
    rows = []
    for r in results:
        worker = r.probe.get("worker", Counter())
        web = r.probe.get("web", Counter())
        tasks = {k.split(":", 1)[1]: v for k, v in worker.items() if k.startswith("tasks:")}
        task_seconds = {
            k.split(":", 1)[1]: v for k, v in worker.items() if k.startswith("task_seconds:")
        }
        task_text = ", ".join(
            f"{name} {r.per_avatar(count):.1f} (avg {task_seconds.get(name, 0) / count * 1000:.0f}"
            " ms)"
            for name, count in sorted(tasks.items())
            if count
        )
        commits = r.pg.get("xact_commit", 0) - r.pg.get("watcher_queries", 0)
        written = sum(r.pg.get(k, 0) for k in ("tup_inserted", "tup_updated", "tup_deleted"))
        rows.append(
            [
                r.label,
                task_text or "–",
                _f(r.per_avatar(worker.get("connections", 0)), 2),
                _f(r.per_avatar(r.cpu.get("web", 0.0)) * 1000, 1),
                _f(r.per_avatar(web.get("queries", 0)), 1),
                _f(r.per_avatar(r.cpu.get("simulator", 0.0)) * 1000, 1),
                _f(r.per_avatar(commits), 1),
                _f(r.per_avatar(written), 1),
                _percentiles(r.overhead_server),
                _percentiles(r.overhead_reported),
                _percentiles(r.overhead_applied),
            ]
        )
    out += _table(
        [
            "run",
            "worker tasks/avatar (avg duration)",
            "worker DB connections/avatar",
            "web CPU ms/avatar",
            "web DB queries/avatar",
            "simulator CPU ms/avatar",
            "PostgreSQL commits/avatar (all)",
            "rows written/avatar",
            "overhead by `completed_at` (server clock) p50/p95/p99 s",
            "of it, to the webhook recorded p50/p95/p99 s",
            "then to `succeeded` p50/p95/p99 s",
        ],
        rows,
    )
    out += [
        "",
        "Countdown lateness (worker, tasks sent with a countdown: start time minus due time):",
        "",
    ]
    out += _table(
        ["run", "tasks", "p50 s", "p95 s", "p99 s", "max s", "> 1 s", "> 5 s"],
        [
            [
                r.label,
                str(len(r.lateness)),
                *[_f(percentile(r.lateness, q), 3) for q in (50, 95, 99)],
                _f(max(r.lateness, default=math.nan), 2),
                str(sum(1 for x in r.lateness if x > 1)),
                str(sum(1 for x in r.lateness if x > 5)),
            ]
            for r in results
            if r.mode != "baseline"
        ],
    )
    for r in results:
        for name, summary in r.profiles.items():
            if not summary:
                continue
            out += [
                "",
                f"CPU profile, {r.label}, {name}: {summary['total_ms']:.1f} ms/avatar under "
                "cProfile (thread CPU time; profiling roughly doubles Python's cost)",
                "",
            ]
            ours, heavy = summary["our code"], summary["self"]
            rows = [
                [
                    f"`{ours[i][0]}` {ours[i][1]:.1f}" if i < len(ours) else "",
                    f"`{heavy[i][0]}` {heavy[i][1]:.1f}" if i < len(heavy) else "",
                ]
                for i in range(max(len(ours), len(heavy)))
            ]
            out += _table(
                ["our code, cumulative ms/avatar", "heaviest functions, self ms/avatar"], rows
            )
    notes = [f"- {r.label}: {note}" for r in results for note in r.notes]
    submit = [
        f"- {r.label}: submissions refused: {dict(r.submit_errors)}"
        for r in results
        if r.submit_errors
    ]
    if notes or submit:
        out += ["", *notes, *submit]
    return out


def _limit(limit: dict) -> str:
    if not limit:
        return "–"
    burst = limit.get("rate_limit_burst") or limit.get("rate_limit")
    return f"{limit.get('rate_limit')} per {_f(limit.get('rate_limit_window'), 0)} s, burst {burst}"


def _pacing(results: list[StageResult]) -> list[str]:
    paced = next((r for r in results if r.mode != "baseline" and r.rate_limit), None)
    if paced is None:
        return []
    out = [
        "",
        f"Create pacing: the simulator limits creates to {_limit(paced.rate_limit)} (429 and "
        "Retry-After beyond; the baseline keeps the simulator's default); the services run with "
        f"REPLICATE_CREATES_PER_MINUTE={CREATES_PER_MINUTE} and "
        f"REPLICATE_CREATES_BURST={CREATES_BURST}. Creates/min = "
        "creates answered 201 ÷ the time from the first to the last of them (the burst, spent "
        "at once, lifts it above the limit for a short run); last create = seconds from the "
        "first POST to the last create; 429s = creates the simulator answered 429:",
        "",
    ]
    out += _table(
        [
            "run",
            "simulator limit",
            "creates",
            "first → last create s",
            "creates/min",
            "last create s (from the first POST)",
            "429s",
        ],
        [
            [
                r.label,
                _limit(r.rate_limit),
                str(r.creates),
                _f(r.creates_span, 1),
                _f(r.creates_per_minute, 0),
                _f(r.last_create, 1),
                str(r.throttled),
            ]
            for r in results
        ],
    )
    return out


def _api(api: dict | None) -> list[str]:
    if not api:
        return []
    out = ["## 3. API: `POST /api/v1/avatars/`", "", api["description"], ""]
    out += _table(
        [
            "phase",
            "requests",
            "rps",
            "p50 ms",
            "p99 ms",
            "max ms",
            "statuses",
            "errors",
            "web CPU %",
            "client CPU %",
            f"machine CPU % (of {psutil.cpu_count() * 100})",
        ],
        [
            [
                phase["name"],
                str(phase["requests"]),
                _f(phase["rps"], 0),
                _f(phase["p50"] * 1000, 1),
                _f(phase["p99"] * 1000, 1),
                _f(phase["max"] * 1000, 1),
                ", ".join(f"{k}: {v}" for k, v in sorted(phase["statuses"].items())),
                str(phase["errors"]),
                _f(phase["web_cpu_percent"], 0),
                _f(phase["client_cpu_percent"], 0),
                _f(phase.get("machine_cpu_percent"), 0),
            ]
            for phase in api["phases"]
        ],
    )
    out += ["", "Overdraft checks:", ""]
    out += [f"- {'OK' if ok else 'FAILED'}: {text}" for ok, text in api["checks"]]
    return out


def _cleanup(cleanup: dict | None) -> list[str]:
    if not cleanup:
        return []
    out = ["## 4. Cleanup at scale", "", cleanup["description"], ""]
    out += _table(
        ["pass", "seconds", "peak RSS MB", "done"],
        [
            [
                p["name"],
                _f(p["seconds"], 2),
                _f(p["peak_rss"] / MB, 0),
                ", ".join(f"{k}: {v}" for k, v in p["counts"].items()),
            ]
            for p in cleanup["passes"]
        ],
    )
    if cleanup.get("jobs"):
        out += ["", "First pass by job:", ""]
        out += _table(
            ["job", "seconds", "rows/files"],
            [[j["name"], _f(j["seconds"], 2), str(j["count"])] for j in cleanup["jobs"]],
        )
    out += [
        "",
        "Query plans: EXPLAIN ANALYZE of each job's batch query as `_batches` sends it (ORDER BY "
        "pk LIMIT 500). Rows marked *comparison* order the same query by the partial index's "
        "column instead, which the jobs do not do today. Full plans at the end.",
        "",
    ]
    rows = []
    for plan in cleanup["plans"]:
        text = plan["plan"]
        scan = next(
            (line.strip().lstrip("-> ") for line in text.splitlines() if "Scan" in line), ""
        )
        removed = re.search(r"Rows Removed by Filter: (\d+)", text)
        took = re.search(r"Execution Time: ([\d.]+) ms", text)
        index = f"`{plan['index']}`: {'yes' if plan['index_used'] else '**no**'}"
        rows.append(
            [
                ("*comparison* " if plan.get("comparison") else "") + plan["name"],
                index if plan["index"] else "–",
                scan.split("  (cost")[0],
                removed.group(1) if removed else "0",
                took.group(1) if took else "?",
            ]
        )
    out += _table(["query", "partial index used", "scan", "rows removed by filter", "ms"], rows)
    full = ["", "### Plans in full", ""]
    for plan in cleanup["plans"]:
        full += [f"- {plan['name']}", "", "```", *plan["plan"].splitlines(), "```", ""]
    cleanup = {**cleanup, "full_plans": full}
    out += ["", *[f"- {note}" for note in cleanup.get("notes", [])]]
    out += cleanup["full_plans"]
    return out


def _dashboard(result: dict | None) -> list[str]:
    """Per range: each panel's query time, the whole page, and the first visit."""
    if not result:
        return []
    spans = result["spans"]
    out = [f"## 5. Dashboard at {result['rows']:,} avatars", "", result["description"], ""]
    names = list(dict.fromkeys(name for span in spans.values() for name in span["panels"]))
    rows = [
        [name, *(_f(span["panels"].get(name, 0), 1) for span in spans.values())] for name in names
    ]
    for label, key in (
        ("all its queries and Redis reads (`collect_dashboard`)", "total_ms"),
        ("of which the provider's Redis reads", "provider_ms"),
        ("**the whole page** (request to response, SVG included)", "page_ms"),
        ("first visit: aggregates the whole range, keeps its periods", "first_visit_ms"),
    ):
        rows.append([label, *(_f(span[key], 1) for span in spans.values())])
    out += _table(["ms (median of 7 visits after the first)", *spans], rows)
    out += ["", *[f"- {note}" for note in result["notes"]], "", "### Dashboard plans", ""]
    for key, span in spans.items():
        for plan in span["plans"]:
            out += [f"- {key}: {plan['panel']}", "", "```", *plan["plan"].splitlines(), "```", ""]
    return out


def _faces(result: dict | None) -> list[str]:
    if not result:
        return []
    out = [
        "## 6. Face check per upload",
        "",
        f"OpenCV's Haar cascade on the stored selfie (avatars/faces.py), {result['repeats']} "
        "checks of each photo in one process after a first that loads the cascade.",
        "",
    ]
    rows = [
        [
            row["case"],
            row["stored"],
            f"`{row['status']}`",
            _f(row["median_ms"], 1),
            _f(row["max_ms"], 1),
        ]
        for row in result["rows"]
    ]
    return out + _table(["photo", "stored as", "verdict", "median ms", "max ms"], rows)


def _targets(results: dict) -> list[str]:
    rows: list[list[str]] = []

    def add(target: str, value: str, ok: bool | None) -> None:
        rows.append([target, value, "–" if ok is None else ("met" if ok else "**missed**")])

    stages: list[StageResult] = results.get("pipeline") or []
    baseline = next((r for r in stages if r.mode == "baseline"), None)
    webhook = next((r for r in stages if r.mode == "webhook"), None)
    polling = [r for r in stages if r.mode == "polling"]
    if baseline and baseline.completions_per_s > 0:
        per_slot = baseline.completions_per_s / baseline.settings.concurrency
        for r in stages:
            if r.mode == "baseline" or r.latency != baseline.latency:
                continue
            ratio = r.completions_per_s / (per_slot * r.settings.concurrency)
            derived = r.settings.concurrency != baseline.settings.concurrency
            add(
                f"throughput ≥ 50× the blocking baseline, one worker process ({r.label}, "
                f"{r.settings.pool} × {r.settings.concurrency})",
                f"{ratio:.1f}×{' (derived)' if derived else ''}, {r.inflight_peak} in flight",
                ratio >= 50,
            )
    for r in [webhook, *polling]:
        if r is None:
            continue
        cpu = r.per_avatar(r.cpu.get("worker", 0.0)) * 1000
        queries = r.per_avatar(r.probe.get("worker", Counter()).get("queries", 0))
        add(f"worker CPU ≤ 30 ms/avatar ({r.label})", f"{cpu:.1f} ms", cpu <= 30)
        add(f"≤ 40 DB queries/avatar ({r.label})", f"{queries:.1f}", queries <= 40)
    for r in [webhook, *polling]:
        if r is None or r.overhead_bar is None:
            continue
        how = "with webhooks" if r.mode == "webhook" else "polling only"
        add(
            f"overhead p95 ≤ {r.overhead_bar:g} s {how} ({r.label})",
            f"{r.overhead_p95:.2f} s",
            r.overhead_met,
        )
    for r in polling:
        calls = r.per_avatar(r.api_calls)
        if r.latency >= 40:
            add(
                f"polling-only ≤ 10 Replicate calls/avatar for a {r.latency:g} s prediction",
                f"{calls:.2f}",
                calls <= 10,
            )
    api = results.get("api")
    if api:
        for phase in api["phases"]:
            add(
                f"API ≥ 200 rps, p99 < 200 ms ({phase['name']})",
                f"{phase['rps']:.0f} rps, p99 {phase['p99'] * 1000:.0f} ms",
                phase["rps"] >= 200 and phase["p99"] < 0.2,
            )
        ok = all(passed for passed, _ in api["checks"])
        add("zero overdrafts (balances ≥ 0, check_ledger)", "ok" if ok else "FAILED", ok)
    cleanup = results.get("cleanup")
    if cleanup and cleanup["passes"]:
        first = cleanup["passes"][0]
        add(
            f"cleanup of {cleanup['rows']:,} rows < 60 s",
            f"{first['seconds']:.1f} s",
            first["seconds"] < 60,
        )
        add(
            "cleanup within 300 MB",
            f"{first['peak_rss'] / MB:.0f} MB",
            first["peak_rss"] < 300 * MB,
        )
        by_index: dict[str, list[bool]] = {}
        for plan in cleanup["plans"]:
            if plan["index"] and not plan.get("comparison"):
                by_index.setdefault(plan["index"], []).append(plan["index_used"])
        for index, used in by_index.items():
            add(
                f"EXPLAIN: the cleanup batch query uses `{index}`",
                f"in {sum(used)} of {len(used)} plans",
                all(used),
            )
    board = results.get("dashboard")
    for key, span in (board or {}).get("spans", {}).items():
        add(
            f"dashboard page ({key}) on {board['rows']:,} avatars < 300 ms",
            f"{span['page_ms']:.0f} ms",
            span["page_ms"] < 300,
        )
    for row in (results.get("faces") or {}).get("rows", []):
        add(
            f"face check ≤ 60 ms per upload ({row['case']})",
            f"{row['median_ms']:.0f} ms",
            row["median_ms"] <= 60,
        )
    if not rows:
        return []
    return ["## Targets", "", *_table(["target", "measured", ""], rows)]


def render(results: dict) -> str:
    context = results["context"]
    lines = [f"# Benchmarks ({context['machine']['started']})", ""]
    machine = {**context["machine"]}
    lines += [f"- **{k}**: {v}" for k, v in machine.items() if k != "started"]
    for key in ("load average (1/5/15 min) at end",):
        if key in context:
            lines.append(f"- **{key}**: {context[key]}")
    lines += [
        f"- **revision**: {context['revision']}; PostgreSQL {context['postgres']}, "
        f"Redis {context['redis']}",
        f"- **settings**: {context['settings']}; DJANGO_DEBUG=false, "
        + (
            f"CONN_MAX_AGE={context['args']['conn_max_age']} (experiment)"
            if context["args"].get("conn_max_age") is not None
            else "CONN_MAX_AGE as configured (60 s with health checks)"
        )
        + "".join(f", {text} (experiment)" for text in _experiments(context["args"]))
        + ", LOG_LEVEL INFO, no beat; the simulator runs on the same machine",
        f"- **command**: `python -m bench {_args(context['args'])}`",
        "",
    ]
    for section in (
        _targets(results),
        _pipeline(results.get("pipeline") or []),
        _api(results.get("api")),
        _cleanup(results.get("cleanup")),
        _dashboard(results.get("dashboard")),
        _faces(results.get("faces")),
    ):
        if section:
            lines += [*section, ""]
    return "\n".join(lines)


def _experiments(args: dict) -> list[str]:
    found = []
    if args.get("prefetch_multiplier") is not None:
        found.append(f"worker_prefetch_multiplier={args['prefetch_multiplier']}")
    if args.get("no_acks_late"):
        found.append("task_acks_late=False")
    return found


def _args(args: dict) -> str:
    return " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in args.items()
        if k not in {"database_url", "redis_url", "results"}
    )


def to_json(results: dict) -> dict:
    return {
        **results,
        "pipeline": [r.to_json() for r in results.get("pipeline") or []],
    }


__all__ = ["render", "to_json", "NOT_API"]
