"""The service's settings plus the bench app: `DJANGO_SETTINGS_MODULE=bench.settings`.

Only the benchmarks use it. It adds `bench` to INSTALLED_APPS, which (1) installs the probe in
every process that loads these settings (query and connection counts, countdown lateness; see
bench/probe.py) and (2) registers the blocking baseline task (bench/tasks.py) with the same
Celery app, so the baseline runs on exactly the same worker command and settings.
"""

from __future__ import annotations

import os

from config.settings import *  # noqa: F403
from config.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.apps.BenchConfig"]

# What-ifs for the report only (`python -m bench --prefetch-multiplier N --no-acks-late`);
# unset, the service's own values stand.
if os.environ.get("BENCH_PREFETCH_MULTIPLIER"):
    CELERY_WORKER_PREFETCH_MULTIPLIER = int(os.environ["BENCH_PREFETCH_MULTIPLIER"])
if os.environ.get("BENCH_ACKS_LATE") == "false":
    CELERY_TASK_ACKS_LATE = False
