"""The cleanup jobs, timed, in a process of their own (so its peak memory is theirs alone).

`python -m bench.cleanup_pass pass --out FILE`: EXPLAIN ANALYZE of each job's batch query
(first batch and one from the middle of the key range), then one pass of the jobs in
`run_cleanup`'s order, each timed, then a second, idle pass. `orphans --out FILE`: the orphaned
files job alone, with the plan of its lookup query. Run with the stage's environment.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import psutil


def _rss_peak() -> int:
    """This process's own peak RSS (VmHWM). Not `ru_maxrss`: Linux carries that over exec
    from the forking parent, so a child of a big orchestrator would report the parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _explain(queryset, name: str, index: str) -> dict:
    plan = queryset.explain(analyze=True, buffers=True)
    # A plan of `IN (500 names)` repeats every name: keep each line readable.
    short = "\n".join(
        line if len(line) < 240 else line[:200] + " ...)" for line in plan.splitlines()
    )
    return {"name": name, "index": index, "index_used": index in plan, "plan": short}


def _batch_plans(when: str) -> list[dict]:
    """The SELECT each job repeats per batch, as `_batches` builds it, at two points."""
    from datetime import timedelta

    from django.conf import settings
    from django.db.models import Q
    from django.utils import timezone

    from avatars import cleanup
    from avatars.models import Avatar, SelfieSession

    now = timezone.now()
    selfies = SelfieSession.objects.filter(
        selfie_deleted_at__isnull=True, expires_at__lte=now
    ).only("pk", "selfie")
    cutoff = now - timedelta(days=settings.AVATAR_RETENTION_DAYS or 30)
    images = Avatar.objects.filter(completed_at__lt=cutoff).filter(~Q(image="")).only("pk", "image")
    keys_cutoff = now - timedelta(hours=cleanup.IDEMPOTENCY_KEY_HOURS)
    keys = (
        Avatar.objects.filter(created_at__lt=keys_cutoff).filter(~Q(idempotency_key="")).only("pk")
    )
    plans = []
    for name, queryset, index, column in (
        ("expired selfies", selfies, "avatars_session_selfie_expiry", "expires_at"),
        ("expired avatar images", images, "avatars_avatar_image_age", "completed_at"),
        ("old idempotency keys", keys, "avatars_avatar_idem_key_age", "created_at"),
    ):
        # For comparison only: the same batch in the partial index's own order.
        by_index = queryset.order_by(column, "pk")[: cleanup.BATCH_SIZE]
        plan = _explain(by_index, f"{name}, first batch ordered by {column}, {when}", index)
        plan["comparison"] = True
        plans.append(plan)
        batch = queryset.order_by("pk")[: cleanup.BATCH_SIZE]
        plans.append(_explain(batch, f"{name}, first batch, {when}", index))
        middle = queryset.model.objects.order_by("pk").values_list("pk", flat=True)[
            queryset.model.objects.count() // 2
        ]
        later = queryset.filter(pk__gt=middle).order_by("pk")[: cleanup.BATCH_SIZE]
        plans.append(_explain(later, f"{name}, a later batch (pk > middle), {when}", index))
    return plans


def run_pass() -> dict:
    from django.db import connection

    from avatars import cleanup

    result: dict = {
        "plans": _batch_plans("10% due"),
        "rss_before": psutil.Process().memory_info().rss,
    }
    jobs = [
        ("delete_expired_selfies", cleanup.delete_expired_selfies),
        ("delete_expired_avatar_images", cleanup.delete_expired_avatar_images),
        ("forget_old_idempotency_keys", cleanup.forget_old_idempotency_keys),
        ("forget_old_webhook_deliveries", cleanup.forget_old_webhook_deliveries),
        ("delete_orphaned_files", cleanup.delete_orphaned_files),
    ]
    result["jobs"] = []
    started = time.perf_counter()
    for name, job in jobs:
        job_started = time.perf_counter()
        count = job()
        result["jobs"].append(
            {"name": name, "seconds": time.perf_counter() - job_started, "count": count}
        )
    result["first_pass"] = {
        "seconds": time.perf_counter() - started,
        "peak_rss": _rss_peak(),
        "counts": {job["name"]: job["count"] for job in result["jobs"]},
    }
    # The hourly steady state: almost nothing due. ANALYZE first, as autovacuum would have.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE avatars_selfiesession")
        cursor.execute("ANALYZE avatars_avatar")
    result["plans_after"] = _batch_plans("nothing due")
    started = time.perf_counter()
    counts = cleanup.run_cleanup()
    result["second_pass"] = {
        "seconds": time.perf_counter() - started,
        "peak_rss": _rss_peak(),
        "counts": counts,
    }
    return result


def run_orphans() -> dict:
    from avatars import cleanup
    from avatars.models import Avatar

    chunk = list(
        Avatar.objects.exclude(image="").values_list("image", flat=True)[: cleanup.BATCH_SIZE]
    )
    plan = _explain(Avatar.objects.filter(image__in=chunk).values_list("image"), "", "")
    started = time.perf_counter()
    count = cleanup.delete_orphaned_files()
    return {
        "seconds": time.perf_counter() - started,
        "count": count,
        "peak_rss": _rss_peak(),
        "plan": plan["plan"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cleanup_pass")
    parser.add_argument("what", choices=["pass", "orphans"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    result = run_pass() if args.what == "pass" else run_orphans()
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
