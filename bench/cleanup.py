"""Cleanup at scale: a million sessions and a million avatars, 10% of them past retention.

Rows are made by `generate_series` in SQL (seconds, where the ORM would take minutes), then
VACUUM ANALYZE'd as a live database would be. Every tenth row is due: its selfie past
SELFIE_RETENTION_HOURS, its image past AVATAR_RETENTION_DAYS (30 here) and its idempotency key
older than 24 h, and each of those has an (empty) file in the stage's own MEDIA_ROOT, so the
jobs really delete files. Of the rest, most selfies were already cleaned and most keys already
forgotten (as earlier passes would have left them), and every image is within retention.

The pass runs in a subprocess (bench/cleanup_pass.py): its peak RSS is the jobs' own.
`delete_orphaned_files` lists storage, so it is measured on its own as well, with a number of
files that rows point to plus some orphans.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.infra import Postgres, service_env
from bench.procs import ROOT

DB_NAME = "bench_avatars_cleanup"
USERS = 1000
RETENTION_DAYS = 30

SQL_USERS = """
INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                       is_staff, is_active, date_joined)
SELECT '!', false, 'cleanup' || g, '', '', '', false, true, now()
FROM generate_series(1, %(users)s) AS g
"""

# Every tenth row (g % 10 = 0) is due; g % 10 = 1 is fresh; the rest were cleaned before.
SQL_SESSIONS = """
INSERT INTO avatars_selfiesession (id, owner_id, selfie, selfie_sha256, selfie_width,
                                   selfie_height, created_at, expires_at, selfie_deleted_at)
SELECT md5('s' || g)::uuid,
       %(first_user)s + g %% %(users)s,
       CASE WHEN g %% 10 IN (0, 1) THEN 'selfies/' || md5('f' || g) || '.jpg' ELSE '' END,
       md5('h' || g), 1024, 1024, ts, ts + interval '24 hours',
       CASE WHEN g %% 10 IN (0, 1) THEN NULL ELSE ts + interval '24 hours' END
FROM (
    SELECT g, CASE
        WHEN g %% 10 = 0 THEN now() - interval '2 days' - (g %% 86400) * interval '1 second'
        WHEN g %% 10 = 1 THEN now() - (g %% 80000) * interval '1 second'
        ELSE now() - interval '2 days' - (g %% (28 * 86400)) * interval '1 second'
    END AS ts
    FROM generate_series(1, %(rows)s) AS g
) AS s
"""

SQL_AVATARS = """
INSERT INTO avatars_avatar (id, owner_id, session_id, style, prompt_version, status, attempts,
                            poll_seq, next_poll_at, api_retries, create_sent_at, deadline_at,
                            image, width, height, image_sha256, error_code, error_message,
                            error_detail, idempotency_key, idempotency_fingerprint, created_at,
                            submitted_at, completed_at, cost_usd, model, quality)
SELECT md5('a' || g)::uuid,
       %(first_user)s + g %% %(users)s,
       md5('s' || g)::uuid,
       'comic', 'v1', 'succeeded', 1, 3, NULL, 0, NULL, ts + interval '10 minutes',
       'avatars/' || md5('i' || g) || '.png', 1024, 1024, md5('x' || g), '', '', '',
       CASE WHEN g %% 10 = 0 OR ts > now() - interval '24 hours' THEN 'key-' || g ELSE '' END,
       CASE WHEN g %% 10 = 0 OR ts > now() - interval '24 hours' THEN md5('k' || g) ELSE '' END,
       ts, ts, ts + interval '30 seconds', 0.05, 'openai/gpt-image-1.5', 'medium'
FROM (
    SELECT g, CASE
        WHEN g %% 10 = 0 THEN now() - interval '40 days' - (g %% 86400) * interval '1 second'
        ELSE now() - (g %% (29 * 86400)) * interval '1 second'
    END AS ts
    FROM generate_series(1, %(rows)s) AS g
) AS s
"""


def _generate(pg: Postgres, rows: int) -> dict[str, float]:
    timings: dict[str, float] = {}
    connection = pg.connect(DB_NAME)
    try:
        with connection.cursor() as cursor:
            started = time.perf_counter()
            cursor.execute(SQL_USERS, {"users": USERS})
            cursor.execute("SELECT min(id) FROM auth_user WHERE username LIKE 'cleanup%'")
            first_user = cursor.fetchone()[0]
            params = {"users": USERS, "rows": rows, "first_user": first_user}
            cursor.execute(SQL_SESSIONS, params)
            cursor.execute(SQL_AVATARS, params)
            timings["insert"] = time.perf_counter() - started
            started = time.perf_counter()
            cursor.execute("VACUUM ANALYZE avatars_selfiesession")
            cursor.execute("VACUUM ANALYZE avatars_avatar")
            timings["vacuum analyze"] = time.perf_counter() - started
            cursor.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('avatars_avatar')), "
                "pg_size_pretty(pg_total_relation_size('avatars_selfiesession'))"
            )
            timings["sizes"] = cursor.fetchone()
    finally:
        connection.close()
    return timings


def _touch_due_files(media: Path, rows: int) -> int:
    """Empty files for the due rows' selfies and images (g % 10 = 0), so deletes are real."""
    (media / "selfies").mkdir(parents=True, exist_ok=True)
    (media / "avatars").mkdir(parents=True, exist_ok=True)
    made = 0
    for g in range(10, rows + 1, 10):
        for path in (
            media / "selfies" / f"{hashlib.md5(f'f{g}'.encode()).hexdigest()}.jpg",
            media / "avatars" / f"{hashlib.md5(f'i{g}'.encode()).hexdigest()}.png",
        ):
            path.touch()
            made += 1
    return made


def _orphan_files(pg: Postgres, media: Path, count: int) -> None:
    """`count` files that rows point to, plus one orphan per ten, all older than the grace."""
    connection = pg.connect(DB_NAME)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT image FROM avatars_avatar WHERE image <> '' LIMIT %s", [count])
            names = [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()
    names += [f"avatars/orphan-{i}.png" for i in range(max(1, count // 10))]
    old = time.time() - 7200
    (media / "avatars").mkdir(parents=True, exist_ok=True)
    for name in names:
        path = media / name
        path.touch()
        os.utime(path, (old, old))


def _run(env: dict[str, str], what: str, work: Path) -> dict:
    out = work / f"{what}.json"
    subprocess.run(
        [sys.executable, "-m", "bench.cleanup_pass", what, "--out", str(out)],
        cwd=ROOT,
        env=env,
        check=True,
    )
    return json.loads(out.read_text())


def run_stage(*, rows: int, orphan_files: int, pg: Postgres, log_dir: Path) -> dict:
    with ExitStack() as stack:
        # Creating 200,000 files on this machine's disk takes minutes (0.6 ms each); on tmpfs,
        # seconds. Deleting costs about the same on both, so tmpfs changes only the set-up.
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        work = Path(tempfile.mkdtemp(prefix="bench-cleanup-", dir=base))
        stack.callback(shutil.rmtree, work, True)
        media = work / "media"
        db_url = stack.enter_context(pg.database(DB_NAME))
        env = service_env(
            database_url=db_url,
            redis_url="redis://127.0.0.1:9/0",
            media_root=media,
            extra={"AVATAR_RETENTION_DAYS": str(RETENTION_DAYS), "LOG_LEVEL": "WARNING"},
        )
        print(f"bench:   generating {rows:,} sessions and {rows:,} avatars", flush=True)
        setup = _generate(pg, rows)
        started = time.perf_counter()
        files = _touch_due_files(media, rows)
        setup["files"] = time.perf_counter() - started
        print("bench:   running the cleanup pass", flush=True)
        result = _run(env, "pass", work)
        orphans = None
        if orphan_files:
            shutil.rmtree(media, ignore_errors=True)
            _orphan_files(pg, media, orphan_files)
            orphans = _run(env, "orphans", work)
    first, second = result["first_pass"], result["second_pass"]
    notes = [
        f"setup (not timed as cleanup): insert {setup['insert']:.1f} s, VACUUM ANALYZE "
        f"{setup['vacuum analyze']:.1f} s, {files:,} empty files {setup['files']:.1f} s; "
        f"table sizes with indexes: avatars {setup['sizes'][0]}, sessions {setup['sizes'][1]}",
        f"the pass process held {result['rss_before'] / 2**20:.0f} MB RSS before the jobs "
        "(Django and the app loaded)",
    ]
    passes = [
        {"name": "first pass (10% due)", **first},
        {"name": "second pass (nothing due)", **second},
    ]
    plans = list(result["plans"]) + list(result["plans_after"])
    if orphans:
        per_thousand = orphans["seconds"] / (orphan_files * 1.1) * 1000
        passes.append(
            {
                "name": f"delete_orphaned_files alone, {orphan_files:,} referenced files + "
                f"{max(1, orphan_files // 10):,} orphans",
                "seconds": orphans["seconds"],
                "peak_rss": orphans["peak_rss"],
                "counts": {"orphans deleted": orphans["count"]},
            }
        )
        notes.append(
            f"delete_orphaned_files: {per_thousand:.2f} s per 1,000 stored files, so about "
            f"{per_thousand * rows / 1000 / 60:.0f} min for {rows:,} stored avatar images"
        )
        plans.append(
            {
                "name": "orphaned files: the `image IN (500 names)` lookup per chunk",
                "index": "",
                "index_used": False,
                "plan": orphans["plan"],
            }
        )
    return {
        "rows": rows,
        "description": (__doc__ or "").split("\n\n", 1)[1].replace("\n", " ").strip(),
        "passes": passes,
        "jobs": result["jobs"],
        "plans": plans,
        "notes": notes,
    }
