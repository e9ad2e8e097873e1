"""A prediction and its lifecycle, derived lazily from timestamps (no thread per prediction)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .ids import isoformat
from .schema import redact_input

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})


class Outcome:
    """How a prediction ends (chosen at creation, normally ``SUCCEED``)."""

    SUCCEED = "succeed"
    FAIL = "fail"
    HANG = "hang"
    EMPTY_OUTPUT = "empty_output"
    FILES_GONE = "files_gone"
    DATA_REMOVED = "data_removed"
    ABORTED = "aborted"

    RENDERING = frozenset({SUCCEED, FILES_GONE})


@dataclass
class Rendered:
    """The result of running the model: output files, or the error that stopped it."""

    ready_at: float
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    error: str | None = None
    log_lines: tuple[str, ...] = ()


@dataclass
class Prediction:
    """State fixed at creation plus the few facts that change (render result, cancel).

    ``deadline`` (``created_at`` + the ``Cancel-After`` header) ends a prediction that is
    still running then: ``aborted`` if it had not started, ``canceled`` if it had.
    """

    id: str
    seq: int
    model: str
    version: str
    input: dict[str, Any]
    created_at: float
    start_at: float
    complete_at: float
    outcome: str = Outcome.SUCCEED
    error_text: str | None = None
    empty_output: list[Any] | None = field(default_factory=list)
    webhook: str | None = None
    webhook_events: frozenset[str] = frozenset()
    webhook_mode: str = "normal"
    scenarios: tuple[str, ...] = ()
    rendered: Rendered | None = None
    canceled_at: float | None = None
    deadline: float | None = None
    completion_notified: bool = False

    # -- lifecycle -----------------------------------------------------------------

    def finished_at(self) -> float | None:
        """When the prediction reaches its terminal state, or ``None`` if not (yet) known."""
        if self.canceled_at is not None:
            return self.canceled_at
        if self.hits_deadline():
            return self.deadline
        return self._natural_end()

    def _natural_end(self) -> float | None:
        """When the model would end it, ignoring cancel and deadline (``None``: not known)."""
        if self.outcome == Outcome.HANG:
            return None
        if self.outcome in Outcome.RENDERING:
            if self.render_pending():
                return None
            return max(self.complete_at, self.rendered.ready_at)
        return self.complete_at

    def render_pending(self) -> bool:
        """Its output image is still being made (its end is not known yet)."""
        return self.outcome in Outcome.RENDERING and self.rendered is None

    def hits_deadline(self) -> bool:
        """Whether the deadline ends it (an end at the deadline itself still counts as done).

        A render still unfinished counts as running: if it finishes before the deadline the
        answer changes, but only before the deadline, when nobody has seen it end.
        """
        if self.deadline is None or self.canceled_at is not None:
            return False
        natural = self._natural_end()
        return natural is None or natural > self.deadline

    def planned_end(self) -> float | None:
        """The earliest moment it may end by itself (when to look for the final webhook)."""
        if self.outcome == Outcome.HANG:
            return self.deadline
        if self.deadline is not None:
            return min(self.complete_at, self.deadline)
        return self.complete_at

    def _never_started(self) -> bool:
        """Ended (or will end) before ``processing`` began."""
        if self.outcome == Outcome.ABORTED:
            return True
        ended = self.canceled_at
        if ended is None and self.hits_deadline():
            ended = self.deadline
        return ended is not None and ended < self.start_at

    def final_status(self) -> str:
        if self.canceled_at is not None:
            return "canceled"
        if self.hits_deadline():
            return "aborted" if self._never_started() else "canceled"
        if self.outcome == Outcome.ABORTED:
            return "aborted"
        if self.outcome == Outcome.FAIL or (self.rendered and self.rendered.error):
            return "failed"
        return "succeeded"

    def status_at(self, now: float) -> str:
        finished = self.finished_at()
        if finished is not None and now >= finished:
            return self.final_status()
        if not self._never_started() and now >= self.start_at:
            return "processing"
        return "starting"

    def started_at(self, now: float) -> float | None:
        """When ``processing`` began, if it has."""
        if self._never_started() or now < self.start_at:
            return None
        return self.start_at

    def is_terminal(self, now: float) -> bool:
        return self.status_at(now) in TERMINAL_STATUSES

    def is_expired(self, now: float, retention: float) -> bool:
        """Whether Replicate would have removed the data by now."""
        finished = self.finished_at()
        return finished is not None and now >= finished and now >= finished + retention

    def output_file(self, name: str, now: float, retention: float) -> tuple[bytes, str] | None:
        """An output file as served from the delivery URL, or ``None`` (404)."""
        if self.status_at(now) != "succeeded" or self.is_expired(now, retention):
            return None
        if self.outcome != Outcome.SUCCEED or self.rendered is None:
            return None
        return self.rendered.files.get(name)

    # -- JSON ----------------------------------------------------------------------

    def to_json(
        self, now: float, *, base_url: str, delivery_base_url: str, retention: float
    ) -> dict[str, Any]:
        """The prediction object as ``GET /v1/predictions/{id}`` returns it."""
        status = self.status_at(now)
        terminal = status in TERMINAL_STATUSES
        expired = terminal and self.is_expired(now, retention)
        output: Any = None
        data_removed = expired
        if status == "succeeded" and not expired:
            if self.outcome == Outcome.EMPTY_OUTPUT:
                output = self.empty_output
            elif self.outcome == Outcome.DATA_REMOVED:
                data_removed = True
            elif self.rendered is not None:
                output = [
                    f"{delivery_base_url}/delivery/{self.id}/{name}" for name in self.rendered.files
                ]
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": redact_input(self.input),
            "logs": self._logs(status, now),
            "output": output,
            "data_removed": data_removed,
            "error": self._error(status),
            "status": status,
            "source": "api",
            "created_at": isoformat(self.created_at),
            "urls": {
                "cancel": f"{base_url}/v1/predictions/{self.id}/cancel",
                "get": f"{base_url}/v1/predictions/{self.id}",
                "web": f"https://replicate.com/p/{self.id}",
            },
        }
        started = self.started_at(now)
        if started is not None:
            body["started_at"] = isoformat(started)
        if terminal:
            finished = self.finished_at()
            assert finished is not None
            body["completed_at"] = isoformat(finished)
            metrics = {"total_time": round(finished - self.created_at, 6)}
            if started is not None:
                metrics["predict_time"] = round(finished - started, 6)
            body["metrics"] = metrics
        return body

    def _error(self, status: str) -> str | None:
        if status != "failed":
            return None
        if self.outcome == Outcome.FAIL:
            return self.error_text
        return self.rendered.error if self.rendered else None

    def _logs(self, status: str, now: float) -> str:
        if self.started_at(now) is None:
            return ""
        lines = ["Generating image..."]
        if status == "succeeded" and self.rendered is not None:
            lines.extend(self.rendered.log_lines)
        elif status == "failed":
            lines.append(f"Error generating image: {self._error(status)}")
        return "\n".join(lines) + "\n"

    def debug_view(self, now: float) -> dict[str, Any]:
        """Internal facts for the control API (not part of Replicate's API)."""
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "status": self.status_at(now),
            "outcome": self.outcome,
            "scenarios": list(self.scenarios),
            "webhook": self.webhook,
            "webhook_events_filter": sorted(self.webhook_events),
            "webhook_mode": self.webhook_mode,
            "created_at": isoformat(self.created_at),
            "planned_start_at": isoformat(self.start_at),
            "planned_completion_at": isoformat(self.complete_at),
            "canceled_at": isoformat(self.canceled_at) if self.canceled_at else None,
            "cancel_after": (
                round(self.deadline - self.created_at, 6) if self.deadline is not None else None
            ),
            "deadline": isoformat(self.deadline) if self.deadline is not None else None,
            "input": redact_input(self.input),
        }
