"""Test helpers: run the simulator in a background thread and drive it.

``run_simulator()`` is a context manager giving a :class:`SimulatorHandle`; the
``replicate_simulator`` pytest fixture hands each test a freshly reset handle backed
by one server per test session.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from .config import SimulatorConfig
from .control import SimulatorControl
from .server import SimulatorServer

if TYPE_CHECKING:
    import replicate

T = TypeVar("T")

DEFAULT_TEST_TOKEN = "r8_simulator-test-token"
# Small delays so tests exercise the real schedule at a small scale.
TEST_CONFIG = SimulatorConfig(
    latency=0.3,
    start_delay=0.05,
    webhook_retry_schedule=(0.05, 0.1, 0.2),
    webhook_timeout=2.0,
)


class SimulatorHandle(SimulatorControl):
    """A running simulator: its address, credentials and control methods."""

    def __init__(self, server: SimulatorServer, token: str) -> None:
        super().__init__(server.base_url)
        self.server = server
        self.token = token
        self.webhook_secret = server.simulator.webhook_secret

    def replicate_client(
        self, *, poll_interval: float | None = None, **kwargs: Any
    ) -> replicate.Client:
        """An official ``replicate.Client`` pointed at this simulator.

        ``poll_interval`` overrides the client's ``Prediction.wait()`` polling (0.5 s).
        """
        import replicate

        client = replicate.Client(api_token=self.token, base_url=self.base_url, **kwargs)
        if poll_interval is not None:
            client.poll_interval = poll_interval
        return client

    def env(self) -> dict[str, str]:
        """Environment variables that point the ``replicate`` client (or a service) here."""
        return {
            "REPLICATE_API_TOKEN": self.token,
            "REPLICATE_BASE_URL": self.base_url,
            "REPLICATE_WEBHOOK_SECRET": self.webhook_secret,
        }

    def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 5.0,
        interval: float = 0.02,
        message: str = "condition",
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, failing after ``timeout``."""
        return wait_for(predicate, timeout=timeout, interval=interval, message=message)


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float = 5.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll with a deadline: the only way tests should wait for asynchronous effects."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@contextmanager
def run_simulator(
    *,
    token: str = DEFAULT_TEST_TOKEN,
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    webhook_secret: str | None = None,
    **overrides: Any,
) -> Iterator[SimulatorHandle]:
    """Start a simulator on a free port; stop it and all its threads on exit."""
    base = (config or TEST_CONFIG).updated({"token": token, **overrides})
    server = SimulatorServer(host=host, port=0, config=base, webhook_secret=webhook_secret)
    server.start()
    handle = SimulatorHandle(server, token)
    try:
        yield handle
    finally:
        handle.close()
        server.stop()


_session_server: dict[str, Any] = {}


def _session_handle(config: pytest.Config) -> SimulatorHandle:
    """One server per test session, started on first use and stopped at session end."""
    if "handle" not in _session_server:
        context = run_simulator()
        _session_server["handle"] = context.__enter__()

        def stop() -> None:
            _session_server.pop("handle", None)
            context.__exit__(None, None, None)

        config.add_cleanup(stop)
    return _session_server["handle"]


@pytest.fixture
def replicate_simulator(request: pytest.FixtureRequest) -> Iterator[SimulatorHandle]:
    """A reset simulator for this test (shared server, state and config reset per test)."""
    handle = _session_handle(request.config)
    handle.reset()
    yield handle
    handle.reset()
