"""Measuring helpers shared by the stages: resource sampling, percentiles, the simulator's log."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from datetime import datetime

import psutil

from bench.procs import Child
from replicate_simulator.control import SimulatorControl


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


class ResourceMonitor:
    """Samples CPU seconds and RSS of process trees (a process and its forks) five times a second.

    CPU is summed over every pid ever seen in the tree (a pid that exits keeps its last
    reading); RSS is the tree's sum at each sample, and its peak is kept.
    """

    def __init__(self, children: dict[str, Child], interval: float = 0.2) -> None:
        self.children = children
        self.interval = interval
        self._cpu: dict[str, dict[int, float]] = {name: {} for name in children}
        self._procs: dict[int, psutil.Process] = {}
        self.peak_rss: dict[str, int] = {name: 0 for name in children}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> ResourceMonitor:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        with self._lock:
            for name, child in self.children.items():
                rss = 0
                for proc in child.tree():
                    proc = self._procs.setdefault(proc.pid, proc)
                    try:
                        with proc.oneshot():
                            times = proc.cpu_times()
                            rss += proc.memory_info().rss
                    except psutil.Error:
                        continue
                    self._cpu[name][proc.pid] = times.user + times.system
                self.peak_rss[name] = max(self.peak_rss[name], rss)

    def reset_peaks(self) -> None:
        with self._lock:
            self.peak_rss = {name: 0 for name in self.children}

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far, by name."""
        self.sample()
        with self._lock:
            return {name: sum(pids.values()) for name, pids in self._cpu.items()}


class RequestLogCollector:
    """Keeps a small record of every request the simulator logged, read every few seconds.

    The simulator keeps its last 10,000 requests only, and each create carries the selfie as a
    data URI: reading often with `since` loses nothing and keeps each read small.
    """

    def __init__(self, control: SimulatorControl, interval: float = 3.0) -> None:
        self.control = control
        self.interval = interval
        self.entries: list[dict] = []
        self._since = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-reqlog", daemon=True)

    def start(self) -> RequestLogCollector:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.read()
            except Exception as exc:  # the simulator went away: the final read will tell
                print(f"bench: reading the simulator's log failed: {exc}", flush=True)

    def halt(self) -> None:
        """Stop reading (on the way out after an error; `stop` for the final read)."""
        self._stop.set()
        self._thread.join(10)

    def read(self) -> None:
        for entry in self.control.requests(since=self._since):
            self._since = max(self._since, entry["seq"])
            self.entries.append(
                {
                    "endpoint": entry.get("endpoint") or "?",
                    "status": entry.get("status"),
                    "prediction_id": entry.get("prediction_id"),
                    "time": entry.get("time"),
                }
            )

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join(10)
        self.read()
        return self.entries

    def by_endpoint(self) -> Counter[str]:
        return Counter(entry["endpoint"] for entry in self.entries)


def wall_clock() -> float:
    return time.time()
