"""A local, Replicate-compatible HTTP server for development and tests.

Run it with ``python -m replicate_simulator``; in tests use
:func:`replicate_simulator.testing.run_simulator` or the ``replicate_simulator`` fixture.
"""

from __future__ import annotations

from .clock import Clock, FakeClock, SystemClock
from .config import SimulatorConfig
from .server import SimulatorServer
from .simulator import Simulator

__all__ = [
    "Clock",
    "FakeClock",
    "Simulator",
    "SimulatorConfig",
    "SimulatorServer",
    "SystemClock",
]
