"""Summaries of the per-thread CPU profiles the probe writes with `--profile` (BENCH_CPROFILE).

Each profiled task or request ran under `cProfile.Profile(time.thread_time)`, so the figures
are CPU seconds of that thread (native code included), not wall time spent waiting on sockets.
Profiling slows Python code down by a factor of about two, so use these summaries for where the
CPU goes, and the unprofiled runs for how much.
"""

from __future__ import annotations

import pstats
from pathlib import Path

OUR_CODE = ("/avatars/", "/credits/", "/config/")


def _label(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name  # a builtin, e.g. <method 'load_verify_locations' of '_ssl._SSLContext'>
    for marker in ("/site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{name} ({filename}:{line})"


def load(directory: Path, role: str) -> pstats.Stats | None:
    files = sorted(directory.glob(f"{role}-*.prof"))
    if not files:
        return None
    stats = pstats.Stats(str(files[0]))
    for path in files[1:]:
        stats.add(str(path))
    return stats


def summarise(directory: Path, role: str, *, avatars: int, top: int = 14) -> dict:
    """CPU ms per avatar: total, our functions (cumulative) and the heaviest functions (self)."""
    stats = load(directory, role)
    if stats is None or not avatars:
        return {}
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tottime for _, _, tottime, _, _ in entries.values())
    ours = sorted(
        (
            (cumtime, func)
            for func, (_, _, _, cumtime, _) in entries.items()
            if any(marker in func[0] for marker in OUR_CODE)
        ),
        reverse=True,
    )
    heaviest = sorted(
        ((tottime, func) for func, (_, _, tottime, _, _) in entries.items()), reverse=True
    )
    per = 1000 / avatars
    return {
        "total_ms": total * per,
        "our code": [(_label(func), t * per) for t, func in ours[:top]],
        "self": [(_label(func), t * per) for t, func in heaviest[:top]],
    }
