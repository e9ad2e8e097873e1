"""The staff dashboard at scale: a million avatars over 30 days, with their ledger.

Users and their sessions are made as the cleanup stage makes them (`bench.cleanup`'s SQL), the
rest by `generate_series` in SQL: avatars spread evenly over 30 days (the newest minute still
running), about 6% failed (a two-hour incident 19 hours ago fails 30% with
`provider_unavailable`) and 1.2% canceled, each with its cost; a spend per avatar; a refund and
compensation per failed or canceled avatar (one in twenty still pending review) and a few goodwill
refunds; a handful of alerts. Then VACUUM ANALYZE, as a live database would be.

The timing runs in a subprocess (bench/dashboard_pass.py) with the service's settings: each
panel's queries several times (median), their plans (EXPLAIN ANALYZE), and the whole page as a
staff member's request renders it, for both ranges.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.cleanup import SQL_SESSIONS, SQL_USERS
from bench.infra import Postgres, service_env
from bench.procs import ROOT

DB_NAME = "bench_avatars_dashboard"
USERS = 1000

SQL_ACCOUNTS = """
INSERT INTO credits_creditaccount (user_id, balance, created_at, updated_at)
SELECT id, 100, now(), now() FROM auth_user WHERE username LIKE 'cleanup%%'
"""

# `outcome` is status:error_code; r spreads outcomes evenly over time (7919 is prime to 1000);
# times to an image are 25-65 s, and one in twenty takes 1-5 minutes more.
SQL_AVATARS = """
INSERT INTO avatars_avatar (id, owner_id, session_id, style, prompt_version, status, attempts,
                            poll_seq, next_poll_at, api_retries, create_sent_at,
                            create_fenced_until, deadline_at, image, width, height, image_sha256,
                            error_code, error_message, error_detail, idempotency_key,
                            idempotency_fingerprint, created_at, submitted_at, completed_at,
                            cost_usd, model, quality)
SELECT md5('d' || g)::uuid, %(first_user)s + (g %% %(users)s + 1) %% %(users)s,
       md5('s' || (g %% %(users)s + 1))::uuid, 'comic', 'v1', split_part(outcome, ':', 1),
       1, 3, NULL, 0, NULL, NULL, ts + interval '10 minutes',
       CASE WHEN outcome = 'succeeded:' THEN 'avatars/' || md5('i' || g) || '.png' ELSE '' END,
       1024, 1024, '', split_part(outcome, ':', 2), '', '', '', '', ts, ts + (g %% 3) * interval
       '1 second',
       CASE WHEN outcome = 'running:' THEN NULL
            WHEN outcome = 'failed:timeout' THEN ts + interval '600 seconds'
            ELSE ts + (25 + abs(hashint8(g)) %% 40
                       + CASE WHEN abs(hashint8(-g)) %% 100 < 5
                              THEN 60 + abs(hashint8(g + 7)) %% 240 ELSE 0 END)
                      * interval '1 second' END,
       CASE WHEN outcome = 'succeeded:' THEN 0.04 + (g %% 7) * 0.006 ELSE 0 END,
       'openai/gpt-image-1', 'medium'
FROM (
    SELECT g, ts, CASE
        WHEN ts > now() - interval '60 seconds' THEN 'running:'
        WHEN ts BETWEEN now() - interval '20 hours' AND now() - interval '18 hours' AND r < 300
            THEN 'failed:provider_unavailable'
        WHEN r < 20 THEN 'failed:content_policy'
        WHEN r < 30 THEN 'failed:timeout'
        WHEN r < 38 THEN 'failed:generation_failed'
        WHEN r < 42 THEN 'failed:provider_rate_limited'
        WHEN r < 45 THEN 'failed:empty_output'
        WHEN r < 47 THEN 'failed:output_unavailable'
        WHEN r < 48 THEN 'failed:internal'
        WHEN r < 60 THEN 'canceled:canceled'
        ELSE 'succeeded:'
    END AS outcome
    FROM (
        SELECT g, g * 7919 %% 1000 AS r,
               now() - (g - 1) * interval '30 days' / %(rows)s AS ts
        FROM generate_series(1::bigint, %(rows)s) AS g
    ) AS t
) AS s
"""

SQL_SPENDS = """
INSERT INTO credits_ledgerentry (kind, amount, balance_after, reference, memo, created_at,
                                 account_id)
SELECT 'spend', -1, 50, 'avatar:' || a.id, '', a.created_at, c.id
FROM avatars_avatar a JOIN credits_creditaccount c ON c.user_id = a.owner_id
"""

# What was given back, and for what: failed and canceled avatars by their code (one in twenty
# still pending review), and one succeeded avatar in 500 as goodwill two hours later.
SQL_PLAN = """
CREATE TEMPORARY TABLE refund_plan AS
SELECT 'avatar:' || a.id AS reference, c.id AS account_id, a.completed_at AS created_at,
       CASE WHEN a.status = 'succeeded' THEN 'goodwill' ELSE a.error_code END AS reason,
       CASE WHEN a.status = 'succeeded' THEN 'staff' ELSE 'automatic' END AS source,
       CASE WHEN a.status = 'succeeded' THEN a.completed_at + interval '2 hours'
            WHEN get_byte(decode(md5(a.id::text), 'hex'), 0) %% 20 = 0 THEN NULL
            ELSE a.completed_at END AS decided_at
FROM avatars_avatar a JOIN credits_creditaccount c ON c.user_id = a.owner_id
WHERE a.status IN ('failed', 'canceled')
   OR (a.status = 'succeeded' AND get_byte(decode(md5(a.id::text), 'hex'), 1) * 256
                                      + get_byte(decode(md5(a.id::text), 'hex'), 2) < 131
       AND a.completed_at < now() - interval '2 hours')
"""

SQL_REFUNDS = """
INSERT INTO credits_ledgerentry (kind, amount, balance_after, reference, memo, created_at,
                                 account_id)
SELECT 'refund', 1, 51, reference, 'refund: ' || reason, decided_at, account_id
FROM refund_plan WHERE decided_at IS NOT NULL
"""

SQL_COMPENSATIONS = """
INSERT INTO credits_compensation (reference, amount, reason, status, source, decided_at, note,
                                  created_at, account_id, ledger_entry_id)
SELECT p.reference, 1, p.reason, CASE WHEN e.id IS NULL THEN 'pending' ELSE 'refunded' END,
       p.source, p.decided_at, '', p.created_at, p.account_id, e.id
FROM refund_plan p
LEFT JOIN credits_ledgerentry e ON e.kind = 'refund' AND e.reference = p.reference
"""

SQL_ALERTS = """
INSERT INTO avatars_alert (rule, severity, message, first_seen_at, last_seen_at, count,
                           resolved_at)
VALUES
 ('failure_rate', 'critical', '31% of generations failed in 15 minutes',
  now() - interval '20 hours', now() - interval '18 hours', 120, now() - interval '18 hours'),
 ('provider_unavailable', 'critical', 'Replicate is failing (breaker open)',
  now() - interval '20 hours', now() - interval '18 hours', 118, now() - interval '18 hours'),
 ('content_policy_spike', 'warning', '12 content-policy refusals in 15 minutes',
  now() - interval '40 minutes', now() - interval '1 minute', 39, NULL),
 ('compensations_pending', 'warning', '2,400 compensations wait for review',
  now() - interval '3 days', now() - interval '1 minute', 4000, NULL)
"""


def seed(pg: Postgres, rows: int) -> dict:
    """Fill the stage's database; returns how long each step took and the tables' sizes."""
    connection = pg.connect(DB_NAME)
    timings: dict = {}
    try:
        with connection.cursor() as cursor:
            started = time.perf_counter()
            cursor.execute(SQL_USERS, {"users": USERS})
            cursor.execute("SELECT min(id) FROM auth_user WHERE username LIKE 'cleanup%'")
            params = {"users": USERS, "rows": rows, "first_user": cursor.fetchone()[0]}
            cursor.execute(SQL_SESSIONS, {**params, "rows": USERS})
            for sql in (SQL_ACCOUNTS, SQL_AVATARS, SQL_SPENDS, SQL_PLAN, SQL_REFUNDS):
                cursor.execute(sql, params)
            cursor.execute(SQL_COMPENSATIONS)
            cursor.execute(SQL_ALERTS)
            timings["insert"] = time.perf_counter() - started
            started = time.perf_counter()
            for table in ("avatars_avatar", "credits_ledgerentry", "credits_compensation"):
                cursor.execute(f"VACUUM ANALYZE {table}")
            timings["vacuum analyze"] = time.perf_counter() - started
            cursor.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('avatars_avatar')), "
                "pg_size_pretty(pg_total_relation_size('credits_ledgerentry')), "
                "(SELECT count(*) FROM credits_compensation)"
            )
            timings["sizes"] = cursor.fetchone()
    finally:
        connection.close()
    return timings


def run_stage(*, rows: int, pg: Postgres, redis_url: str, log_dir: Path) -> dict:
    with pg.database(DB_NAME) as db_url:
        print(f"bench:   generating {rows:,} avatars over 30 days, with their ledger", flush=True)
        setup = seed(pg, rows)
        env = service_env(
            database_url=db_url,
            redis_url=redis_url,
            media_root=log_dir / "media-unused",
            extra={"LOG_LEVEL": "WARNING"},
        )
        out = log_dir / "dashboard.json"
        print("bench:   timing the dashboard", flush=True)
        subprocess.run(
            [sys.executable, "-m", "bench.dashboard_pass", "--out", str(out)],
            cwd=ROOT,
            env=env,
            check=True,
        )
        spans = json.loads(out.read_text())
    return {
        "rows": rows,
        "description": (__doc__ or "").split("\n\n", 1)[1].replace("\n", " ").strip(),
        "spans": spans,
        "notes": [
            f"setup (not timed): insert {setup['insert']:.1f} s, VACUUM ANALYZE "
            f"{setup['vacuum analyze']:.1f} s; sizes with indexes: avatars {setup['sizes'][0]}, "
            f"ledger {setup['sizes'][1]}; {setup['sizes'][2]:,} compensations",
        ],
    }
