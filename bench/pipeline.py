"""Pipeline and baseline benchmarks: N avatars through real web, worker, Redis and PostgreSQL.

One stage = fresh database, flushed Redis DB, and new simulator, gunicorn and Celery worker
processes. The pipeline stages submit through `POST /api/v1/avatars/`; the baseline stage sends
the same number of charged, queued avatars to `bench.tasks.generate_blocking_task` on the same
worker command.

When is an avatar "visible as succeeded in the API"? Polling 300 avatars' detail URLs every
50 ms would load this 2-core machine and distort what it measures, so a watcher reads the
avatars' statuses from PostgreSQL every 50 ms (one query; the API reads the same committed
rows) and, for each avatar it sees finish, asks the API once: the overhead is the moment the API
answered `succeeded` minus the simulator's planned completion of that avatar's prediction.
The server-side figure (`completed_at` minus the planned completion) is kept as a check.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg2
from celery import Celery

from bench import probe, profiling
from bench.infra import QUEUE, Postgres, RedisDb, new_webhook_secret, service_env
from bench.measure import (
    RequestLogCollector,
    ResourceMonitor,
    parse_time,
    peak_overlap,
    percentile,
)
from bench.procs import BIN, Child, Processes, free_port, http_ok, wait_until
from replicate_simulator.control import SimulatorControl

PER_USER = 3  # AVATAR_MAX_IN_FLIGHT_PER_USER's default: users = ceil(N / 3)
SUBMIT_CLIENTS = 16
WATCH_INTERVAL = 0.05
# The longest fallback poll countdown (AVATAR_POLL_MAX_DELAY 30 s plus 20% jitter) and margin.
DRAIN_TIMEOUT = 30 * 1.2 + 15
TERMINAL = ("succeeded", "failed", "canceled")
# Calls to Replicate's API; `output` is the delivery host (the image download) and
# `file_download` the model reading an uploaded selfie: listed, not counted as API calls.
NOT_API = {"output", "file_download"}
# Replicate's account limit on creates, in the simulator of every pipeline stage (not the
# baseline's: replicate.run() has no pacing), and the services' pace (their defaults).
CREATES_PER_MINUTE = 600
CREATES_WINDOW = 60.0
CREATES_BURST = 20
# The overhead p95 each mode should stay within (seconds).
OVERHEAD_P95_BAR = {"webhook": 0.5, "polling": 3.0}


@dataclass
class WorkerSettings:
    pool: str
    concurrency: int
    web_workers: int

    def describe(self) -> str:
        return (
            f"celery worker --pool {self.pool} --concurrency {self.concurrency} (one worker "
            f"process{'' if self.pool == 'threads' else ' and its children'}); gunicorn "
            f"--workers {self.web_workers} (sync)"
        )


@dataclass
class StageResult:
    label: str
    mode: str
    n: int
    latency: float
    settings: WorkerSettings
    accepted: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    submit_errors: Counter[str] = field(default_factory=Counter)
    submit_seconds: float = 0.0
    started_at: float = 0.0
    last_create: float = math.nan  # seconds from the first submission to the last create
    wall: float = math.nan
    overhead: list[float] = field(default_factory=list)
    overhead_server: list[float] = field(default_factory=list)
    # With webhooks, the overhead in two: to the webhook's report recorded, then to `succeeded`.
    overhead_reported: list[float] = field(default_factory=list)
    overhead_applied: list[float] = field(default_factory=list)
    inflight_peak: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    call_errors: int = 0
    webhooks: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    probe: dict[str, Counter[str]] = field(default_factory=dict)
    lateness: list[float] = field(default_factory=list)
    pg: dict[str, int] = field(default_factory=dict)
    rate_limit: dict[str, float | None] = field(default_factory=dict)  # the simulator's
    creates: int = 0  # creates the simulator answered with a prediction
    creates_span: float = math.nan  # seconds from the first to the last of them
    throttled: int = 0  # creates the simulator answered 429
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, dict] = field(default_factory=dict)

    @property
    def succeeded(self) -> int:
        return self.statuses.get("succeeded", 0)

    @property
    def completions_per_s(self) -> float:
        return self.succeeded / self.wall if self.wall and self.wall > 0 else math.nan

    def per_avatar(self, value: float) -> float:
        return value / self.accepted if self.accepted else math.nan

    @property
    def creates_per_minute(self) -> float:
        if not self.creates_span or not self.creates_span > 0:
            return math.nan
        return self.creates / self.creates_span * 60

    @property
    def overhead_p95(self) -> float:
        return percentile(self.overhead, 95)

    @property
    def overhead_bar(self) -> float | None:
        return OVERHEAD_P95_BAR.get(self.mode)

    @property
    def overhead_met(self) -> bool | None:
        if self.overhead_bar is None or math.isnan(self.overhead_p95):
            return None
        return self.overhead_p95 <= self.overhead_bar

    @property
    def api_calls(self) -> int:
        return sum(n for endpoint, n in self.calls.items() if endpoint not in NOT_API)

    def to_json(self) -> dict:
        return {
            "label": self.label,
            "mode": self.mode,
            "n": self.n,
            "latency": self.latency,
            "settings": self.settings.__dict__,
            "accepted": self.accepted,
            "statuses": dict(self.statuses),
            "submit_errors": dict(self.submit_errors),
            "submit_seconds": self.submit_seconds,
            "last_create": self.last_create,
            "wall": self.wall,
            "completions_per_s": self.completions_per_s,
            "overhead": self.overhead,
            "overhead_server": self.overhead_server,
            "overhead_reported": self.overhead_reported,
            "overhead_applied": self.overhead_applied,
            "overhead_p95": self.overhead_p95,
            "overhead_p95_bar": self.overhead_bar,
            "overhead_p95_met": self.overhead_met,
            "inflight_peak": self.inflight_peak,
            "calls": dict(self.calls),
            "call_errors": self.call_errors,
            "webhooks": dict(self.webhooks),
            "cpu": self.cpu,
            "peak_rss": self.peak_rss,
            "probe": {role: dict(c) for role, c in self.probe.items()},
            "lateness": self.lateness,
            "pg": self.pg,
            "rate_limit": self.rate_limit,
            "creates": self.creates,
            "creates_span": self.creates_span,
            "creates_per_minute": self.creates_per_minute,
            "throttled_creates": self.throttled,
            "notes": self.notes,
            "profiles": self.profiles,
        }


def _seed(env: dict[str, str], args: list[str], work: Path) -> dict:
    out = work / f"seed-{time.monotonic_ns()}.json"
    subprocess.run(
        [sys.executable, "-m", "bench.seed", *args, "--out", str(out)],
        env=env,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return json.loads(out.read_text())


def _pg_stats(pg: Postgres, name: str) -> dict[str, int]:
    connection = pg.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, "
                "tup_fetched FROM pg_stat_database WHERE datname = %s",
                [name],
            )
            row = cursor.fetchone() or (0,) * 6
    finally:
        connection.close()
    keys = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")
    return dict(zip((*keys, "tup_fetched"), row, strict=True))


def start_services(
    procs: Processes,
    env: dict[str, str],
    settings: WorkerSettings,
    *,
    web_port: int,
    simulator: tuple[int, float, str] | None,
    worker: bool = True,
) -> dict[str, Child]:
    """Simulator (port, latency, webhook secret), gunicorn and the Celery worker, when ready."""
    children: dict[str, Child] = {}
    if simulator is not None:
        port, latency, secret = simulator
        children["simulator"] = procs.start(
            "simulator",
            [
                sys.executable,
                "-m",
                "replicate_simulator",
                "--port",
                str(port),
                "--latency",
                str(latency),
                "--webhook-secret",
                secret,
                "--log-level",
                "WARNING",
            ],
            env,
        )
        url = f"http://127.0.0.1:{port}/_simulator/health"
        wait_until(lambda: http_ok(url), timeout=30, what="simulator")
    children["web"] = procs.start(
        "web",
        [
            str(BIN / "gunicorn"),
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{web_port}",
            "--workers",
            str(settings.web_workers),
            "--access-logfile",
            "-",
            "--timeout",
            "60",
        ],
        {**env, "BENCH_ROLE": "web"},
    )
    if worker:
        children["worker"] = procs.start(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "config",
                "worker",
                "--pool",
                settings.pool,
                "--concurrency",
                str(settings.concurrency),
                "--queues",
                QUEUE,
                "--loglevel",
                "INFO",
            ],
            {**env, "BENCH_ROLE": "worker"},
        )
    web_url = f"http://127.0.0.1:{web_port}/healthz"
    wait_until(lambda: http_ok(web_url), timeout=60, what="gunicorn")
    if worker:
        child = children["worker"]
        wait_until(
            lambda: child.log_contains(" ready.") or not child.alive(),
            timeout=60,
            what="celery worker",
        )
        if not child.alive():
            raise RuntimeError(f"bench: the worker exited:\n{child.tail()}")
    return children


def warm_up(web_url: str, token: str, web_workers: int) -> None:
    """Each gunicorn worker imports the URL conf and views on its first request: not measured."""
    with httpx.Client(base_url=web_url, timeout=30) as client:
        for _ in range(4 * web_workers):
            client.get("/api/v1/avatars/", headers={"Authorization": f"Token {token}"})


class Watcher:
    """Notices finished avatars in PostgreSQL and confirms each through the API, once."""

    def __init__(self, db_url: str, web_url: str, tokens: dict[str, str]) -> None:
        self.connection = psycopg2.connect(db_url)
        self.connection.autocommit = True
        self.http = httpx.Client(base_url=web_url, timeout=30)
        self.tokens = tokens  # avatar id -> its owner's API token
        self.seen_db: dict[str, float] = {}
        self.seen_api: dict[str, tuple[float, str]] = {}
        self.queries = 0
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="bench-confirm")
        self._lock = threading.Lock()

    def poll(self) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT id::text, status FROM avatars_avatar WHERE status IN %s", [TERMINAL]
            )
            rows = cursor.fetchall()
        self.queries += 1
        now = time.time()
        for avatar_id, _status in rows:
            if avatar_id in self.tokens and avatar_id not in self.seen_db:
                self.seen_db[avatar_id] = now
                self._pool.submit(self._confirm, avatar_id)

    def _confirm(self, avatar_id: str) -> None:
        token = self.tokens[avatar_id]
        try:
            response = self.http.get(
                f"/api/v1/avatars/{avatar_id}/", headers={"Authorization": f"Token {token}"}
            )
            status = response.json().get("status", f"http {response.status_code}")
        except (httpx.HTTPError, ValueError) as exc:
            status = f"error {type(exc).__name__}"
        with self._lock:
            self.seen_api[avatar_id] = (time.time(), status)

    def done(self) -> int:
        with self._lock:
            return len(self.seen_api)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.http.close()
        self.connection.close()


def _submit_api(web_url: str, jobs: list[tuple[str, str]]) -> list[dict]:
    """POST every (token, session) pair from SUBMIT_CLIENTS threads; one record per request."""

    def post(job: tuple[str, str]) -> dict:
        token, session = job
        started = time.time()
        try:
            response = client.post(
                "/api/v1/avatars/",
                json={"session": session, "style": "comic"},
                headers={"Authorization": f"Token {token}"},
            )
            body = response.json() if response.status_code < 500 else {}
            return {
                "token": token,
                "started": started,
                "ended": time.time(),
                "status": response.status_code,
                "id": body.get("id"),
            }
        except (httpx.HTTPError, ValueError) as exc:
            return {"token": token, "started": started, "ended": time.time(), "error": str(exc)}

    with httpx.Client(base_url=web_url, timeout=60) as client:
        with ThreadPoolExecutor(SUBMIT_CLIENTS, thread_name_prefix="bench-submit") as pool:
            return list(pool.map(post, jobs))


def run_stage(
    *,
    mode: str,
    n: int,
    latency: float,
    settings: WorkerSettings,
    pg: Postgres,
    redis_db: RedisDb,
    log_dir: Path,
    label: str | None = None,
    timeout: float | None = None,
    profile: bool = False,
) -> StageResult:
    """One of `webhook`, `polling` or `baseline`, start to finish, all processes stopped after."""
    label = label or mode
    result = StageResult(label=label, mode=mode, n=n, latency=latency, settings=settings)
    db_name = "bench_avatars_pipeline"
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
        stack.callback(shutil.rmtree, work, True)
        db_url = stack.enter_context(pg.database(db_name))
        redis_db.flush()
        stack.callback(redis_db.flush)
        procs = stack.enter_context(Processes(log_dir / label))

        sim_port, web_port = free_port(), free_port()
        sim_url, web_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{web_port}"
        secret = new_webhook_secret()
        env = service_env(
            database_url=db_url,
            redis_url=redis_db.url,
            media_root=work / "media",
            replicate_base_url=sim_url,
            webhook_secret=secret,
            public_base_url=web_url if mode == "webhook" else "",
            extra={
                "REPLICATE_CREATES_PER_MINUTE": str(CREATES_PER_MINUTE),
                "REPLICATE_CREATES_BURST": str(CREATES_BURST),
            },
        )
        profile_dir = log_dir / label / "profiles"
        if profile:
            profile_dir.mkdir(parents=True, exist_ok=True)
            env["BENCH_CPROFILE"] = str(profile_dir)
        users_needed = math.ceil(n / PER_USER)
        seed_args = ["users", "--count", str(users_needed), "--credits", str(PER_USER)]
        if mode == "baseline":
            seed_args = [*seed_args[1:], "--avatars", str(n), "--per-user", str(PER_USER)]
            seed_args = ["baseline", *seed_args]
        seeded = _seed(env, seed_args, work)
        users = seeded["users"]

        children = start_services(
            procs, env, settings, web_port=web_port, simulator=(sim_port, latency, secret)
        )
        warm_up(web_url, users[0]["token"], settings.web_workers)
        control = SimulatorControl(sim_url, timeout=120)
        stack.callback(control.close)
        if mode != "baseline":
            config = control.set_rate_limit(
                CREATES_PER_MINUTE, window=CREATES_WINDOW, burst=CREATES_BURST
            )
        else:
            config = control.config()
        result.rate_limit = {
            key: config.get(key) for key in ("rate_limit", "rate_limit_window", "rate_limit_burst")
        }
        monitor = ResourceMonitor(children).start()
        stack.callback(monitor.stop)
        collector = RequestLogCollector(control).start()
        stack.callback(collector.halt)
        time.sleep(1.0)  # the probe's first flush; the idle worker settles
        probe_before, lateness_before = probe.read(redis_db.client)
        pg_before = _pg_stats(pg, db_name)
        cpu_before = monitor.cpu()
        monitor.reset_peaks()

        t0 = result.started_at = time.time()
        tokens: dict[str, str] = {}
        if mode == "baseline":
            app = Celery("bench-baseline", broker=redis_db.url)
            app.conf.task_default_queue = QUEUE
            for i, avatar_id in enumerate(seeded["avatars"]):
                app.send_task("bench.tasks.generate_blocking_task", args=[avatar_id], queue=QUEUE)
                tokens[avatar_id] = users[i // PER_USER]["token"]
            app.close()
            result.accepted = len(tokens)
        else:
            jobs = [
                (users[i // PER_USER]["token"], users[i // PER_USER]["session"]) for i in range(n)
            ]
            records = _submit_api(web_url, jobs)
            for record in records:
                if record.get("status") == 202 and record.get("id"):
                    tokens[record["id"]] = record["token"]
                else:
                    result.submit_errors[str(record.get("status") or record.get("error"))] += 1
            result.accepted = len(tokens)
        result.submit_seconds = time.time() - t0

        if timeout is None:
            if mode == "baseline":
                rounds = math.ceil(n / max(1, settings.concurrency))
                timeout = rounds * (latency + 5) * 1.5 + 120
            else:
                timeout = latency * 2 + 240
        watcher = Watcher(db_url, web_url, tokens)
        deadline = time.monotonic() + timeout
        while watcher.done() < len(tokens) and time.monotonic() < deadline:
            watcher.poll()
            time.sleep(WATCH_INTERVAL)
            for name, child in children.items():
                if not child.alive():
                    raise RuntimeError(f"bench: {name} exited during the run:\n{child.tail()}")
        if watcher.done() < len(tokens):
            result.notes.append(
                f"timed out after {timeout:.0f} s with {len(tokens) - watcher.done()} "
                "avatars unfinished"
            )
        watcher.close()
        t_end = max((t for t, _ in watcher.seen_api.values()), default=time.time())
        result.wall = t_end - t0
        # Work an avatar causes after it is visible (a fallback poll that finds it finished)
        # is still its cost: wait until the worker holds no message before reading counters.
        drained = _drain(redis_db, timeout=DRAIN_TIMEOUT)
        if not drained:
            result.notes.append(f"worker still held messages {DRAIN_TIMEOUT:.0f} s after the end")
        cpu_after = monitor.cpu()
        if profile:
            time.sleep(probe.PROFILE_DUMP_INTERVAL + 1)
            for name in ("worker", "web"):
                result.profiles[name] = profiling.summarise(
                    profile_dir, name, avatars=result.accepted
                )
        result.cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
        result.peak_rss = dict(monitor.peak_rss)
        time.sleep(probe.FLUSH_INTERVAL * 2.5)
        probe_after, lateness_after = probe.read(redis_db.client)
        result.probe = {
            role: probe_after[role] - probe_before.get(role, Counter()) for role in probe_after
        }
        result.lateness = lateness_after[len(lateness_before) :]
        result.statuses = Counter(status for _, status in watcher.seen_api.values())
        result.statuses["unfinished"] = len(tokens) - watcher.done()
        result.statuses = +result.statuses

        # Stop the service processes first: their PostgreSQL backends flush statistics as
        # they disconnect, so pg_stat_database is complete.
        for name in ("worker", "web"):
            procs.stop(children[name])
        pg_after = _pg_stats(pg, db_name)
        result.pg = {key: pg_after[key] - pg_before[key] for key in pg_before}
        result.pg["watcher_queries"] = watcher.queries

        entries = collector.stop()
        result.calls = Counter(entry["endpoint"] for entry in entries)
        result.call_errors = sum(1 for entry in entries if (entry["status"] or 0) >= 400)
        creates = [entry for entry in entries if entry["endpoint"] == "create"]
        result.throttled = sum(1 for entry in creates if entry["status"] == 429)
        created = [
            parse_time(entry["time"]) for entry in creates if 200 <= (entry["status"] or 0) < 300
        ]
        result.creates = len(created)
        if created:
            result.creates_span = max(created) - min(created)
        result.webhooks = Counter(
            "ok" if (d.get("status_code") or 0) < 300 and d.get("status_code") else "failed"
            for d in control.webhook_deliveries()
        )
        predictions = control.predictions()
        _overheads(result, predictions, watcher, db_url)
    return result


def _drain(redis_db: RedisDb, *, timeout: float) -> bool:
    """Wait until no message is queued or held unacknowledged (countdowns included)."""
    client = redis_db.client
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not client.llen(QUEUE) and not client.hlen("unacked"):
            return True
        time.sleep(0.2)
    return False


def _overheads(result: StageResult, predictions: list[dict], watcher: Watcher, db_url: str) -> None:
    """Match each avatar to its last prediction's planned completion; compute the overheads."""
    planned = {p["id"]: parse_time(p.get("planned_completion_at")) for p in predictions}
    created = [parse_time(p.get("created_at")) for p in predictions if p.get("created_at")]
    if created:
        result.last_create = max(created) - result.started_at
    result.inflight_peak = peak_overlap(
        [
            (parse_time(p["created_at"]), planned[p["id"]])
            for p in predictions
            if planned.get(p["id"]) and p.get("created_at")
        ]
    )
    reported: dict[str, float] = {}
    connection = psycopg2.connect(db_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id::text, extract(epoch FROM completed_at) FROM avatars_avatar "
                "WHERE status = 'succeeded'"
            )
            completed = {avatar_id: float(at) for avatar_id, at in cursor.fetchall()}
            if result.mode == "baseline":
                last = {
                    p["input"].get("user_id"): p["id"]
                    for p in sorted(predictions, key=lambda p: p["created_at"])
                }
            else:
                cursor.execute(
                    "SELECT DISTINCT ON (avatar_id) avatar_id::text, prediction_id, "
                    "extract(epoch FROM reported_at) "
                    "FROM avatars_prediction ORDER BY avatar_id, number DESC"
                )
                rows = cursor.fetchall()
                last = {avatar_id: prediction_id for avatar_id, prediction_id, _ in rows}
                reported = {avatar_id: float(at) for avatar_id, _, at in rows if at is not None}
    finally:
        connection.close()
    for avatar_id, (seen, status) in watcher.seen_api.items():
        finish = planned.get(last.get(avatar_id, ""))
        if status != "succeeded" or finish is None:
            continue
        result.overhead.append(seen - finish)
        if avatar_id in completed:
            result.overhead_server.append(completed[avatar_id] - finish)
            if avatar_id in reported:
                result.overhead_reported.append(reported[avatar_id] - finish)
                result.overhead_applied.append(completed[avatar_id] - reported[avatar_id])


def overhead_verdict(result: StageResult) -> str:
    """`≤ 0.5 s: met` (or `missed`), or "" for a run without a bar."""
    if result.overhead_bar is None:
        return ""
    met = result.overhead_met
    return f"≤ {result.overhead_bar:g} s: {'–' if met is None else ('met' if met else 'missed')}"


def summary_line(result: StageResult) -> str:
    verdict = overhead_verdict(result)
    return (
        f"{result.label}: {result.succeeded}/{result.accepted} succeeded in {result.wall:.1f} s "
        f"({result.completions_per_s:.2f}/s), overhead p50 {percentile(result.overhead, 50):.2f} "
        f"p95 {result.overhead_p95:.2f} s{f' ({verdict})' if verdict else ''}, "
        f"{result.creates} creates at {result.creates_per_minute:.0f}/min (last "
        f"{result.last_create:.1f} s after the first POST), {result.throttled} answered 429, "
        f"worker CPU {result.per_avatar(result.cpu.get('worker', 0)) * 1000:.1f} ms/avatar"
    )
