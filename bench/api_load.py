"""API benchmark: `POST /api/v1/avatars/` from 32 concurrent clients against gunicorn.

Two phases on one server: many users (each request from a different account than the one
before, each account with enough credits: the success path), then one hot account (every
client spends from the same account, which has fewer credits than requests: the contended
path, where the guarded `UPDATE ... balance >= cost` must refuse the rest with 402).

No worker runs: the submissions' Celery messages pile up in the bench's Redis database, which
is flushed afterwards. AVATAR_MAX_IN_FLIGHT_PER_USER is raised so that credits, not the
in-flight limit, are what runs out on the hot account (the limit is checked under the same
user-row lock, so it would serialise the same way).

The clients use `http.client` (cheapest in CPU; gunicorn's sync workers close every connection
anyway) in threads of this process, on the same 2 cores as the server: their CPU share is
reported next to the server's.
"""

from __future__ import annotations

import http.client
import json
import math
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import psutil
import psycopg2

from bench.infra import Postgres, RedisDb, service_env
from bench.measure import ResourceMonitor, percentile
from bench.pipeline import WorkerSettings, _seed, start_services, warm_up
from bench.procs import ROOT, Processes, free_port

DB_NAME = "bench_avatars_api"
# Answers that are the API doing its job: accepted, out of credits, over a limit.
EXPECTED = {"202", "402", "429"}


def _load(
    port: int, jobs: list[tuple[str, str]], clients: int
) -> tuple[list[float], Counter[str], float]:
    """Send every (token, session) POST from `clients` threads; latencies, statuses, wall time."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    cursor = iter(range(len(jobs)))

    def client_loop() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            token, session = jobs[index]
            body = json.dumps({"session": session, "style": "comic"})
            started = time.perf_counter()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connection.request(
                    "POST",
                    "/api/v1/avatars/",
                    body=body,
                    headers={
                        "Authorization": f"Token {token}",
                        "Content-Type": "application/json",
                    },
                )
                response = connection.getresponse()
                response.read()
                status = str(response.status)
                connection.close()
            except (OSError, http.client.HTTPException) as exc:
                status = f"error {type(exc).__name__}"
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                statuses[status] += 1

    threads = [
        threading.Thread(target=client_loop, name=f"bench-client-{i}") for i in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, statuses, time.perf_counter() - started


def _phase(
    name: str,
    port: int,
    jobs: list[tuple[str, str]],
    clients: int,
    monitor: ResourceMonitor,
    expected: set[str],
) -> dict:
    me = psutil.Process()
    cpu_before, own_before = monitor.cpu(), sum(me.cpu_times()[:2])
    psutil.cpu_percent()  # starts the machine-wide measurement
    latencies, statuses, wall = _load(port, jobs, clients)
    machine = psutil.cpu_percent() * psutil.cpu_count()
    cpu_after, own_after = monitor.cpu(), sum(me.cpu_times()[:2])
    errors = sum(n for status, n in statuses.items() if status not in expected)
    return {
        "name": name,
        "requests": len(latencies),
        "wall": wall,
        "rps": len(latencies) / wall if wall else math.nan,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies, default=math.nan),
        "statuses": dict(statuses),
        "errors": errors,
        "web_cpu_percent": (cpu_after["web"] - cpu_before["web"]) / wall * 100,
        "client_cpu_percent": (own_after - own_before) / wall * 100,
        "machine_cpu_percent": machine,
    }


def _checks(db_url: str, env: dict[str, str], phases: list[dict], hot_user: int, hot_credits: int):
    accepted = sum(p["statuses"].get("202", 0) for p in phases)
    hot_accepted = phases[-1]["statuses"].get("202", 0)
    connection = psycopg2.connect(db_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT min(balance), count(*) FROM credits_creditaccount")
            min_balance, accounts = cursor.fetchone()
            cursor.execute("SELECT count(*) FROM avatars_avatar")
            (avatars,) = cursor.fetchone()
            cursor.execute("SELECT count(*) FROM credits_ledgerentry WHERE kind = 'spend'")
            (spends,) = cursor.fetchone()
            cursor.execute(
                "SELECT balance FROM credits_creditaccount WHERE user_id = %s", [hot_user]
            )
            (hot_balance,) = cursor.fetchone()
    finally:
        connection.close()
    ledger = subprocess.run(
        [sys.executable, "manage.py", "check_ledger"],
        cwd=ROOT,
        env={**env, "DATABASE_URL": db_url},
        capture_output=True,
        text=True,
    )
    ledger_text = (ledger.stdout + ledger.stderr).strip().splitlines()
    return [
        (min_balance >= 0, f"every balance ≥ 0 (lowest {min_balance} of {accounts} accounts)"),
        (
            avatars == spends == accepted,
            f"avatars created ({avatars}) = spend entries ({spends}) = 202 answers ({accepted})",
        ),
        (
            hot_accepted <= hot_credits and hot_balance == hot_credits - hot_accepted,
            f"hot account: {hot_accepted} accepted with {hot_credits} credits, balance now "
            f"{hot_balance}",
        ),
        (
            ledger.returncode == 0,
            f"`manage.py check_ledger`: {ledger_text[-1] if ledger_text else ledger.returncode}",
        ),
    ]


def run_stage(*, args, pg: Postgres, redis_db: RedisDb, log_dir: Path) -> dict:
    settings = WorkerSettings(
        pool=args.pool, concurrency=args.concurrency, web_workers=args.web_workers
    )
    users_count, requests, clients = args.api_users, args.api_requests, args.api_clients
    credits = max(1, math.ceil(requests / users_count))
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="bench-api-"))
        stack.callback(shutil.rmtree, work, True)
        db_url = stack.enter_context(pg.database(DB_NAME))
        redis_db.flush()
        stack.callback(redis_db.flush)
        procs = stack.enter_context(Processes(log_dir / "api"))
        env = service_env(
            database_url=db_url,
            redis_url=redis_db.url,
            media_root=work / "media",
            # Credits, not the in-flight limit or the per-user submission throttle (60/min),
            # must be what runs out on the hot account; both checks still run on every request.
            extra={
                "AVATAR_MAX_IN_FLIGHT_PER_USER": "1000000",
                "THROTTLE_SUBMISSIONS": "1000000/min",
            },
        )
        users = _seed(env, ["users", "--count", str(users_count), "--credits", str(credits)], work)
        hot = _seed(
            env,
            ["users", "--count", "1", "--credits", str(args.api_hot_credits), "--prefix", "hot"],
            work,
        )["users"][0]
        users = users["users"]
        port = free_port()
        children = start_services(procs, env, settings, web_port=port, simulator=None, worker=False)
        warm_up(f"http://127.0.0.1:{port}", hot["token"], settings.web_workers)
        monitor = ResourceMonitor(children).start()
        stack.callback(monitor.stop)

        many_jobs = [
            (users[i % users_count]["token"], users[i % users_count]["session"])
            for i in range(requests)
        ]
        hot_jobs = [(hot["token"], hot["session"])] * args.api_hot_requests
        phases = [
            _phase(
                f"{users_count} users, {credits} credits each",
                port,
                many_jobs,
                clients,
                monitor,
                EXPECTED,
            ),
            _phase(
                f"one hot account, {args.api_hot_credits} credits",
                port,
                hot_jobs,
                clients,
                monitor,
                EXPECTED,
            ),
        ]
        procs.stop(children["web"])
        checks = _checks(db_url, env, phases, hot["id"], args.api_hot_credits)
    return {
        "description": (
            f"{clients} concurrent clients (threads of the bench process, `http.client`, a new "
            f"connection per request), gunicorn `--workers {settings.web_workers}` (sync), no "
            "Celery worker (messages go to the bench's Redis DB and are flushed), "
            "AVATAR_MAX_IN_FLIGHT_PER_USER and THROTTLE_SUBMISSIONS raised so credits are the "
            "limit (both checks still run). Errors = anything but 202, 402 or 429 (5xx, "
            "connection errors)."
        ),
        "phases": phases,
        "checks": checks,
    }
