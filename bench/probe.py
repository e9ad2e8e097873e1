"""Counts taken inside the service's processes during a benchmark, published to Redis.

Why in-process: "database queries per avatar" must be the worker's own queries, which neither
PostgreSQL's `pg_stat_database` (every client together, transactions not statements) nor
`pg_stat_statements` (not installed here) can tell apart. A `connection.execute_wrapper`
appended to every new connection counts each statement where it is sent. Celery's signals give
each task's lateness against its countdown (`eta`) and its duration.

Counting must not distort what it counts: increments stay in memory under a lock, and a daemon
thread per process writes them to Redis twice a second (one HSET), never in the query path.
Enabled only by `DJANGO_SETTINGS_MODULE=bench.settings`; `BENCH_ROLE` names the process.

With `BENCH_CPROFILE=DIR`, each task (worker) and request (web) also runs under a per-thread
`cProfile.Profile(time.thread_time)`: CPU time of that thread, native code included (TLS set-up,
PNG decoding and libpq release the GIL, so a GIL-sampling profiler misses them), written to
DIR/<role>-<pid>.prof every few seconds. It slows the process down: profile in separate runs.
"""

from __future__ import annotations

import atexit
import cProfile
import json
import os
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import redis
from django.conf import settings

PREFIX = "bench:probe:"
FLUSH_INTERVAL = 0.5

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_lateness: list[float] = []
_started: dict[str, float] = {}
_flusher_pid: int | None = None
_profile_dir = os.environ.get("BENCH_CPROFILE", "")
_local = threading.local()
_snapshots: dict[int, object] = {}
PROFILE_DUMP_INTERVAL = 3.0


def _count(key: str, amount: float = 1) -> None:
    with _lock:
        _counts[key] += amount


def count_query(execute, sql, params, many, context):
    _count("queries")
    return execute(sql, params, many, context)


def _on_connection_created(sender, connection, **kwargs) -> None:
    _count("connections")
    # The wrapper list outlives a closed connection (CONN_MAX_AGE=0 reconnects often).
    if count_query not in connection.execute_wrappers:
        connection.execute_wrappers.append(count_query)
    _ensure_flusher()


class _Snapshot:
    """What `pstats.Stats` reads from: a copy of one thread's stats, taken between tasks."""

    def __init__(self, stats: dict) -> None:
        self.stats = stats

    def create_stats(self) -> None:
        pass


def _profiler() -> cProfile.Profile:
    profile = getattr(_local, "profile", None)
    if profile is None:
        profile = _local.profile = cProfile.Profile(time.thread_time)
    return profile


def _start_profiling(**kwargs) -> None:
    if _profile_dir:
        _ensure_flusher()
        _profiler().enable()


def _stop_profiling(**kwargs) -> None:
    """Disable, then snapshot in this same thread (a profiler is not safe across threads)."""
    if not _profile_dir:
        return
    profile = _profiler()
    profile.create_stats()  # disables it first
    with _lock:
        _snapshots[threading.get_ident()] = _Snapshot(dict(profile.stats))


def _on_task_prerun(task_id=None, task=None, **kwargs) -> None:
    _ensure_flusher()
    _start_profiling()
    now = time.time()
    eta = getattr(task.request, "eta", None) if task is not None else None
    if eta:
        due = datetime.fromisoformat(eta) if isinstance(eta, str) else eta
        if due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        with _lock:
            _lateness.append(now - due.timestamp())
    with _lock:
        _started[task_id] = time.perf_counter()


def _on_task_postrun(task_id=None, task=None, **kwargs) -> None:
    _stop_profiling()
    with _lock:
        started = _started.pop(task_id, None)
        name = getattr(task, "name", "?").rsplit(".", 1)[-1]
        _counts[f"tasks:{name}"] += 1
        if started is not None:
            _counts[f"task_seconds:{name}"] += time.perf_counter() - started


def _ensure_flusher() -> None:
    """One flusher thread per process, started after any fork (prefork, gunicorn)."""
    global _flusher_pid
    if _flusher_pid == os.getpid():
        return
    with _lock:
        if _flusher_pid == os.getpid():
            return
        _flusher_pid = os.getpid()
    threading.Thread(target=_flush_forever, name="bench-probe", daemon=True).start()


def _flush_forever() -> None:
    last_dump = 0.0
    while True:
        time.sleep(FLUSH_INTERVAL)
        flush()
        if _profile_dir and time.monotonic() - last_dump > PROFILE_DUMP_INTERVAL:
            dump_profiles()
            last_dump = time.monotonic()


def dump_profiles() -> None:
    """Every thread's latest snapshot, merged, into one file (replaced each time)."""
    import pstats

    with _lock:
        snapshots = list(_snapshots.values())
    if not snapshots:
        return
    merged = pstats.Stats(snapshots[0])
    for snapshot in snapshots[1:]:
        merged.add(snapshot)
    role = os.environ.get("BENCH_ROLE", "process")
    path = os.path.join(_profile_dir, f"{role}-{os.getpid()}.prof")
    merged.dump_stats(path + ".tmp")
    os.replace(path + ".tmp", path)


def flush() -> None:
    role = os.environ.get("BENCH_ROLE", "process")
    with _lock:
        counts = dict(_counts)
        lateness = list(_lateness)
        _lateness.clear()
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        pipe = client.pipeline(transaction=False)
        pipe.hset(f"{PREFIX}counts", f"{role}:{os.getpid()}", json.dumps(counts))
        if lateness:
            pipe.rpush(f"{PREFIX}lateness", *lateness)
        pipe.execute()
    except redis.RedisError:
        with _lock:
            _lateness[:0] = lateness


def install() -> None:
    from celery.signals import task_postrun, task_prerun
    from django.core.signals import request_finished, request_started
    from django.db.backends.signals import connection_created

    connection_created.connect(_on_connection_created, dispatch_uid="bench-probe-connection")
    request_started.connect(_start_profiling, dispatch_uid="bench-probe-request-start", weak=False)
    request_finished.connect(_stop_profiling, dispatch_uid="bench-probe-request-end", weak=False)
    task_prerun.connect(_on_task_prerun, dispatch_uid="bench-probe-prerun", weak=False)
    task_postrun.connect(_on_task_postrun, dispatch_uid="bench-probe-postrun", weak=False)
    atexit.register(flush)


def read(client: redis.Redis) -> tuple[dict[str, Counter[str]], list[float]]:
    """Counts by role (summed over that role's processes) and every recorded lateness."""
    by_role: dict[str, Counter[str]] = {}
    for field, value in client.hgetall(f"{PREFIX}counts").items():
        role = field.decode().split(":", 1)[0]
        by_role.setdefault(role, Counter()).update(json.loads(value))
    lateness = [float(x) for x in client.lrange(f"{PREFIX}lateness", 0, -1)]
    return by_role, lateness


def reset(client: redis.Redis) -> None:
    client.delete(f"{PREFIX}counts", f"{PREFIX}lateness")
