"""`python -m bench` (`make bench`): every benchmark of issue 8, figures on stdout and in a file.

    python -m bench                       # everything: N=300, L=20 s (several minutes)
    python -m bench -n 20 -L 2            # a quick look while developing
    python -m bench --only pipeline,api   # some stages (pipeline, baseline, api, cleanup,
                                          # dashboard, faces)

Needs PostgreSQL (BENCH_DATABASE_URL, a server URL; the bench creates and drops its own
`bench_avatars_*` databases) and Redis (BENCH_REDIS_URL; DB 15 by default, flushed).
Results: bench/results/bench-<time>.md (and .json), logs of every process beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from bench import infra, report
from bench.pipeline import WorkerSettings
from bench.procs import ROOT, raise_on_sigterm

STAGES = ("pipeline", "baseline", "api", "cleanup", "dashboard", "faces")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--avatars", type=int, default=300, help="N (default 300)")
    parser.add_argument(
        "-L", "--latency", type=float, default=20.0, help="simulated model seconds (20)"
    )
    parser.add_argument(
        "--polling-latency",
        type=float,
        default=40.0,
        help="latency of the extra polling-only run for the calls-per-avatar target (40; 0: skip)",
    )
    parser.add_argument("--only", default=",".join(STAGES), help="comma-separated stages")
    parser.add_argument(
        "--modes",
        default="webhook,polling",
        help="pipeline modes to run (webhook, polling); the extra runs are polling runs",
    )
    parser.add_argument("--pool", choices=["threads", "prefork"], default="threads")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="worker threads (32, as the Procfile)"
    )
    parser.add_argument(
        "--small-concurrency",
        type=int,
        default=4,
        help="an extra polling run with this worker concurrency, to show countdown stalls (4; "
        "0: skip)",
    )
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=None,
        help="experiment: give the service this CONN_MAX_AGE (through DATABASE_URL; 0: a new "
        "connection per request and task)",
    )
    parser.add_argument(
        "--prefetch-multiplier",
        type=int,
        default=None,
        help="experiment: the worker's CELERY_WORKER_PREFETCH_MULTIPLIER (service: 1)",
    )
    parser.add_argument(
        "--no-acks-late",
        action="store_true",
        help="experiment: CELERY_TASK_ACKS_LATE=False in the worker (service: True)",
    )
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn --workers (2)")
    parser.add_argument("--api-clients", type=int, default=32)
    parser.add_argument("--api-users", type=int, default=1000)
    parser.add_argument("--api-requests", type=int, default=3000, help="many-users phase")
    parser.add_argument("--api-hot-requests", type=int, default=1000, help="hot-account phase")
    parser.add_argument("--api-hot-credits", type=int, default=200)
    parser.add_argument("--cleanup-rows", type=int, default=1_000_000)
    parser.add_argument("--dashboard-rows", type=int, default=1_000_000, help="avatars")
    parser.add_argument(
        "--orphan-files", type=int, default=20_000, help="files for the orphan-scan measurement"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", infra.DEFAULT_SERVER_URL),
        help="PostgreSQL server (any database; the bench makes its own)",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", infra.DEFAULT_REDIS_URL)
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="CPU-profile worker and web in the pipeline stages (slower: figures are skewed)",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"bench: unknown stage(s) {unknown}; choose from {STAGES}")
    raise_on_sigterm()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = args.results / f"logs-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    if args.prefetch_multiplier is not None:
        os.environ["BENCH_PREFETCH_MULTIPLIER"] = str(args.prefetch_multiplier)
    if args.no_acks_late:
        os.environ["BENCH_ACKS_LATE"] = "false"
    if args.conn_max_age is not None:
        infra.EXPERIMENT_DB_OPTIONS = f"conn_max_age={args.conn_max_age}&conn_health_checks=true"
    pg = infra.Postgres(args.database_url)
    redis_db = infra.RedisDb(args.redis_url)
    redis_db.check_ours()
    settings = WorkerSettings(
        pool=args.pool, concurrency=args.concurrency, web_workers=args.web_workers
    )
    context = {
        "machine": infra.machine(),
        "revision": infra.git_revision(),
        "postgres": pg.version(),
        "redis": redis_db.version(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "settings": settings.describe(),
    }
    results: dict = {
        "context": context,
        "pipeline": [],
        "api": None,
        "cleanup": None,
        "dashboard": None,
        "faces": None,
    }
    base_env = infra.service_env(
        database_url=infra.database_url(args.database_url, infra.TEMPLATE_DB),
        redis_url=args.redis_url,
        media_root=log_dir / "media-unused",
    )
    failed = False
    try:
        print(f"bench: migrating a template database ({infra.TEMPLATE_DB})", flush=True)
        pg.create_template(base_env)
        if "pipeline" in stages or "baseline" in stages:
            from bench import pipeline

            small = WorkerSettings(
                pool=args.pool, concurrency=args.small_concurrency, web_workers=args.web_workers
            )
            runs = []
            if "pipeline" in stages:
                modes = [m.strip() for m in args.modes.split(",") if m.strip()]
                runs += [(mode, args.latency, mode, settings) for mode in modes]
                if args.polling_latency and args.polling_latency != args.latency:
                    label = f"polling L={args.polling_latency:g}s"
                    runs.append(("polling", args.polling_latency, label, settings))
                if args.small_concurrency and args.small_concurrency != args.concurrency:
                    label = f"polling, concurrency {args.small_concurrency}"
                    runs.append(("polling", args.latency, label, small))
            if "baseline" in stages:
                runs.append(("baseline", args.latency, "baseline", settings))
            for mode, latency, label, run_settings in runs:
                print(f"bench: pipeline stage {label} (N={args.avatars}, L={latency:g} s)")
                result = pipeline.run_stage(
                    mode=mode,
                    n=args.avatars,
                    latency=latency,
                    settings=run_settings,
                    pg=pg,
                    redis_db=redis_db,
                    log_dir=log_dir,
                    label=label.replace(" ", "_").replace("=", "").replace(",", ""),
                    profile=args.profile,
                )
                result.label = label
                print(f"bench:   {pipeline.summary_line(result)}", flush=True)
                results["pipeline"].append(result)
        if "api" in stages:
            from bench import api_load

            print("bench: API stage", flush=True)
            results["api"] = api_load.run_stage(
                args=args, pg=pg, redis_db=redis_db, log_dir=log_dir
            )
        if "cleanup" in stages:
            from bench import cleanup

            print(f"bench: cleanup stage ({args.cleanup_rows} rows)", flush=True)
            results["cleanup"] = cleanup.run_stage(
                rows=args.cleanup_rows, orphan_files=args.orphan_files, pg=pg, log_dir=log_dir
            )
        if "dashboard" in stages:
            from bench import dashboard

            print(f"bench: dashboard stage ({args.dashboard_rows} avatars)", flush=True)
            results["dashboard"] = dashboard.run_stage(
                rows=args.dashboard_rows, pg=pg, redis_url=args.redis_url, log_dir=log_dir
            )
        if "faces" in stages:
            from bench import faces

            print("bench: face check stage", flush=True)
            results["faces"] = faces.run_stage()
    except KeyboardInterrupt:
        print("bench: interrupted; stopping everything", file=sys.stderr)
        failed = True
    except Exception:
        traceback.print_exc()
        failed = True
    finally:
        pg.drop(infra.TEMPLATE_DB)
        redis_db.flush()

    context["load average (1/5/15 min) at end"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    markdown = report.render(results)
    path = args.results / f"bench-{stamp}.md"
    path.write_text(markdown)
    (args.results / f"bench-{stamp}.json").write_text(
        json.dumps(report.to_json(results), indent=1, default=str)
    )
    print()
    print(markdown)
    print(f"bench: results in {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
