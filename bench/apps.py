"""The bench app: installs the probe when bench.settings is the settings module."""

from __future__ import annotations

from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "bench"
    verbose_name = "Benchmarks"

    def ready(self) -> None:
        from bench import probe

        probe.install()
