"""The simulator's state and operations, independent of HTTP (the server maps routes onto it)."""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from . import outcomes
from .catalog import ModelCatalog
from .clock import Clock, SystemClock
from .config import ConfigError, SimulatorConfig
from .files import FileStore
from .ids import isoformat, new_id, parse_isoformat
from .imaging import CONTENT_TYPES, SIZES, ImageError, RenderCache
from .inputs import InputError, InputResolver, netloc_aliases
from .pagination import decode_cursor, encode_cursor, paginate
from .prediction import Outcome, Prediction, Rendered
from .problems import InvalidField, validation_failed
from .ratelimit import TokenBucket
from .reqlog import EventLog
from .scenarios import OUTCOME_KINDS, WEBHOOK_KINDS, Scenario, ScenarioQueue
from .scheduling import Scheduler
from .schema import MODELS, WEBHOOK_EVENTS, ModelSpec, validate_input
from .signing import new_webhook_secret
from .tokens import token_log_lines
from .webhooks import WebhookSender

logger = logging.getLogger(__name__)

_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
_RENDER_RECHECK = 0.05
# Settings that shape the create limit; changing any of them refills the bucket.
_RATE_LIMIT_SETTINGS = frozenset({"rate_limit", "rate_limit_window", "rate_limit_burst"})


@dataclass(frozen=True)
class CreateRequest:
    """A validated create call."""

    spec: ModelSpec
    version: str
    input: dict[str, Any]
    webhook: str | None
    webhook_events: frozenset[str]
    cancel_after: float | None = None


class Simulator:
    """Predictions, files, scenarios and logs; thread-safe; time comes from ``clock``."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Clock | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self._initial_config = config or SimulatorConfig()
        self._config = self._initial_config
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._predictions: dict[str, Prediction] = {}
        self._seq = itertools.count(1)
        self._generation = 0
        self._closed = False
        self._outage_until: float | None = None
        self._delayed_downloads = 0
        self.base_url = "http://127.0.0.1"
        self.webhook_secret = webhook_secret or new_webhook_secret()
        self.files = FileStore(
            self.clock, lambda: self.base_url, lambda: self.config.file_retention
        )
        self.scenarios = ScenarioQueue()
        # The schemas served and validated against; tests may change them (control API).
        self.models = ModelCatalog()
        self.limiter = TokenBucket(self.clock, *_limits(self._config))
        self.request_log = EventLog()
        self.webhook_log = EventLog()
        self.scheduler = Scheduler(self.clock)
        self._renders = RenderCache()
        self._render_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sim-render")
        self.resolver = InputResolver(self.own_netlocs, self.files.content, self._output_bytes)
        self.webhooks = WebhookSender(
            clock=self.clock,
            scheduler=self.scheduler,
            log=self.webhook_log,
            secret=lambda: self.webhook_secret,
            retry_schedule=lambda: self.config.webhook_retry_schedule,
            timeout=lambda: self.config.webhook_timeout,
            is_current=lambda generation: generation == self._generation,
        )

    # -- lifecycle of the simulator itself ----------------------------------------------

    def start(self) -> None:
        self.scheduler.start()

    def close(self) -> None:
        """Stop background work and wake every waiting request."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self.scheduler.stop()
        self._render_pool.shutdown(wait=True, cancel_futures=True)
        self.webhooks.close()

    # -- configuration ------------------------------------------------------------------

    @property
    def config(self) -> SimulatorConfig:
        with self._lock:
            return self._config

    def update_config(self, changes: dict[str, Any]) -> SimulatorConfig:
        with self._lock:
            self._config = self._config.updated(changes)
            if _RATE_LIMIT_SETTINGS & set(changes):
                self.limiter.configure(*_limits(self._config))
            self._changed.notify_all()
            return self._config

    @property
    def generation(self) -> int:
        """Increases on every reset; work begun before a reset must not leak into the next."""
        with self._lock:
            return self._generation

    @property
    def delivery_base_url(self) -> str:
        return self.config.delivery_base_url or self.base_url

    def own_netlocs(self) -> set[str]:
        return netloc_aliases(self.base_url) | netloc_aliases(self.delivery_base_url)

    def reset(self) -> None:
        """Forget everything a test did; configuration returns to its start-up values."""
        with self._changed:
            self._generation += 1
            self._predictions.clear()
            self._config = self._initial_config
            self._outage_until = None
            self._changed.notify_all()
        self.files.clear()
        self.scheduler.clear()
        self.scenarios.clear()
        self.models.restore()
        self.limiter.configure(*_limits(self._initial_config))
        self.request_log.clear()
        self.webhook_log.clear()

    # -- outage -------------------------------------------------------------------------

    def start_outage(self, seconds: float) -> dict[str, Any]:
        """Every ``/v1`` call answers 503 for ``seconds`` from now; replaces any outage.

        ``0`` ends it. Predictions keep their own timeline meanwhile: an outage of the API
        does not stop work already accepted, nor its webhooks.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ConfigError("seconds must be a number")
        if not math.isfinite(seconds) or seconds < 0:
            raise ConfigError("seconds must be a finite number >= 0")
        with self._lock:
            self._outage_until = self.clock.time() + seconds if seconds > 0 else None
            return self._outage_view(self.clock.time())

    def end_outage(self) -> dict[str, Any]:
        return self.start_outage(0)

    def outage(self) -> dict[str, Any]:
        """``{"active", "until", "remaining"}``."""
        with self._lock:
            return self._outage_view(self.clock.time())

    def in_outage(self) -> bool:
        with self._lock:
            return self._outage_until is not None and self.clock.time() < self._outage_until

    def _outage_view(self, now: float) -> dict[str, Any]:
        until = self._outage_until
        if until is None or now >= until:
            return {"active": False, "until": None, "remaining": 0.0}
        return {"active": True, "until": isoformat(until), "remaining": round(until - now, 3)}

    # -- slow downloads -------------------------------------------------------------------

    def hold_download(self) -> None:
        """Wait ``output_delay`` before an output file is served (a slow CDN).

        Only the calling request thread waits; a reset or shutdown ends the wait early so
        a slow download never outlives the test that started it.
        """
        seconds = self.config.output_delay
        if seconds <= 0:
            return
        # Real time, not ``self.clock``: it is a real thread holding a real socket.
        deadline = time.monotonic() + seconds
        with self._changed:
            generation = self._generation
            self._delayed_downloads += 1
            try:
                while not self._closed and self._generation == generation:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._changed.wait(left)
            finally:
                self._delayed_downloads -= 1

    @property
    def delayed_downloads(self) -> int:
        """Output downloads being held by ``output_delay`` right now."""
        with self._lock:
            return self._delayed_downloads

    # -- predictions --------------------------------------------------------------------

    def check_create(
        self,
        spec: ModelSpec,
        version: str,
        body: dict[str, Any],
        *,
        cancel_after: float | None = None,
    ) -> CreateRequest | dict[str, Any]:
        """Validate the input against the model; a problem document if it does not fit."""
        errors: list[InvalidField] = validate_input(spec, body.get("input"))
        if errors:
            return validation_failed(errors)
        events = body.get("webhook_events_filter")
        return CreateRequest(
            spec=spec,
            version=version,
            input=body["input"],
            webhook=body.get("webhook"),
            webhook_events=frozenset(events) if events is not None else frozenset(WEBHOOK_EVENTS),
            cancel_after=cancel_after,
        )

    def create_prediction(self, request: CreateRequest) -> Prediction:
        """Create a prediction; its lifecycle is derived from the times fixed here."""
        cfg = self.config
        now = self.clock.time()
        model = request.spec.full_name
        prediction = Prediction(
            id=new_id(),
            seq=next(self._seq),
            model=model,
            version=request.version,
            input=request.input,
            created_at=now,
            start_at=now + cfg.effective_start_delay(),
            complete_at=now + cfg.latency,
            webhook=request.webhook,
            webhook_events=request.webhook_events,
        )
        if request.cancel_after is not None:
            # Replicate raises deadlines below its minimum (5 s) rather than refusing them.
            prediction.deadline = now + max(request.cancel_after, cfg.cancel_after_minimum)
        applied = []
        if scenario := self.scenarios.take_prediction(OUTCOME_KINDS, model):
            self._apply_outcome(prediction, scenario)
            applied.append(scenario.kind)
        if scenario := self.scenarios.take_prediction(WEBHOOK_KINDS, model):
            prediction.webhook_mode = "never" if scenario.kind == "webhook_never" else "twice"
            applied.append(scenario.kind)
        prediction.scenarios = tuple(applied)
        with self._changed:
            generation = self._generation
            self._predictions[prediction.id] = prediction
        if prediction.outcome in Outcome.RENDERING:
            self._submit_render(prediction, generation)
        self._schedule_webhooks(prediction, generation)
        return prediction

    @staticmethod
    def _apply_outcome(prediction: Prediction, scenario: Scenario) -> None:
        params = scenario.params
        kind = scenario.kind
        if kind in ("content_policy", "transient_failure", "e6716", "failure"):
            prediction.outcome = Outcome.FAIL
            defaults = {
                "content_policy": outcomes.moderation_blocked(prediction.id),
                "transient_failure": outcomes.TRANSIENT_E1000,
                "e6716": outcomes.DIRECTOR_E6716,
            }
            prediction.error_text = params.get("error") or defaults.get(kind)
        elif kind == "hang":
            prediction.outcome = Outcome.HANG
        elif kind == "empty_output":
            prediction.outcome = Outcome.EMPTY_OUTPUT
            prediction.empty_output = params.get("output", [])
        elif kind == "expired_output":
            mode = params.get("mode", "files_gone")
            prediction.outcome = (
                Outcome.DATA_REMOVED if mode == "data_removed" else Outcome.FILES_GONE
            )
        elif kind == "aborted":
            prediction.outcome = Outcome.ABORTED

    def get_prediction(self, prediction_id: str) -> dict[str, Any] | None:
        with self._lock:
            prediction = self._predictions.get(prediction_id)
            return self._snapshot(prediction) if prediction else None

    def cancel_prediction(self, prediction_id: str) -> dict[str, Any] | None:
        """Cancel if still running; a finished prediction is returned unchanged."""
        with self._changed:
            prediction = self._predictions.get(prediction_id)
            if prediction is None:
                return None
            now = self.clock.time()
            if not prediction.is_terminal(now):
                prediction.canceled_at = now
                self._changed.notify_all()
                generation = self._generation
                if self._wants_webhooks(prediction):
                    self.scheduler.schedule(
                        now, lambda: self._complete_webhook(prediction.id, generation)
                    )
            return self._snapshot(prediction)

    def wait_until_terminal(self, prediction_id: str, timeout: float) -> None:
        """Block (``Prefer: wait``) until the prediction ends or ``timeout`` passes."""
        deadline = self.clock.time() + timeout
        with self._changed:
            while not self._closed:
                now = self.clock.time()
                prediction = self._predictions.get(prediction_id)
                if prediction is None or prediction.is_terminal(now) or now >= deadline:
                    return
                finished = prediction.finished_at()
                nap = finished - now if finished is not None and finished > now else 0.05
                self._changed.wait(max(0.005, min(nap, deadline - now)))

    def list_predictions(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """Newest first, in pages, with cursor URLs like Replicate's."""
        after = _first(query, "created_after")
        before = _first(query, "created_before")
        with self._lock:
            items = sorted(self._predictions.values(), key=lambda p: p.seq, reverse=True)
            if after:
                items = [p for p in items if p.created_at >= parse_isoformat(after)]
            if before:
                items = [p for p in items if p.created_at < parse_isoformat(before)]
            page, newer, older = paginate(
                items, decode_cursor(_first(query, "cursor")), self.config.page_size
            )
            filters = {k: v for k, v in (("created_after", after), ("created_before", before)) if v}

            def link(direction: str, seq: int) -> str:
                query_string = urlencode({"cursor": encode_cursor(direction, seq), **filters})
                return f"{self.base_url}/v1/predictions?{query_string}"

            return {
                "previous": link("a", page[0].seq) if page and newer else None,
                "next": link("b", page[-1].seq) if page and older else None,
                "results": [self._snapshot(p) for p in page],
            }

    def output_file(self, prediction_id: str, name: str) -> tuple[bytes, str] | None:
        with self._lock:
            prediction = self._predictions.get(prediction_id)
            if prediction is None:
                return None
            return prediction.output_file(name, self.clock.time(), self.config.retention)

    def predictions_debug(self) -> list[dict[str, Any]]:
        now = self.clock.time()
        with self._lock:
            ordered = sorted(self._predictions.values(), key=lambda p: p.seq)
            return [p.debug_view(now) for p in ordered]

    def _snapshot(self, prediction: Prediction) -> dict[str, Any]:
        return prediction.to_json(
            self.clock.time(),
            base_url=self.base_url,
            delivery_base_url=self.delivery_base_url,
            retention=self.config.retention,
        )

    # -- rendering ----------------------------------------------------------------------

    def _submit_render(self, prediction: Prediction, generation: int) -> None:
        try:
            self._render_pool.submit(self._render, prediction, generation)
        except RuntimeError:  # shutting down
            pass

    def _render(self, prediction: Prediction, generation: int) -> None:
        if generation != self.generation:  # reset since: nobody will look at it
            return
        # The built-in spec, not a changed one: its defaults are what the renderer understands.
        spec = MODELS[prediction.model]
        options = {p.name: prediction.input.get(p.name, p.default) for p in spec.properties}
        fmt = options["output_format"]
        count = options["number_of_images"]
        try:
            images = options["input_images"] or []
            source = self.resolver.read(images[0]) if images else None
            data = self._renders.render(
                source,
                aspect_ratio=options["aspect_ratio"],
                output_format=fmt,
                background=options["background"],
                compression=options["output_compression"],
                prompt=options["prompt"] or "",
            )
        except (InputError, ImageError) as exc:
            rendered = Rendered(ready_at=self.clock.time(), error=str(exc))
        except Exception as exc:  # a bug here must fail the prediction, not hang it
            logger.exception("rendering %s failed", prediction.id)
            rendered = Rendered(ready_at=self.clock.time(), error=f"Internal error: {exc}")
        else:
            ext = _EXTENSIONS[fmt]
            names = [f"output.{ext}"] if count == 1 else [f"output_{i}.{ext}" for i in range(count)]
            width, height = SIZES[options["aspect_ratio"]]
            seconds = prediction.complete_at - prediction.start_at
            rendered = Rendered(
                ready_at=self.clock.time(),
                files={name: (data, CONTENT_TYPES[fmt]) for name in names},
                log_lines=(
                    f"Image size: {width}x{height}",
                    *token_log_lines(options, len(images), count),
                    f"Generated image in {seconds:.1f}sec",
                    f"Generated {count} images",
                ),
            )
        with self._changed:
            if self._generation == generation:
                # Stamped under the lock: a reader that saw the deadline pass while this
                # render was unfinished must not later see it end earlier, successfully.
                rendered.ready_at = max(rendered.ready_at, self.clock.time())
                prediction.rendered = rendered
                self._changed.notify_all()

    # -- webhooks -----------------------------------------------------------------------

    @staticmethod
    def _wants_webhooks(prediction: Prediction) -> bool:
        return prediction.webhook is not None and prediction.webhook_mode != "never"

    def _schedule_webhooks(self, prediction: Prediction, generation: int) -> None:
        if not self._wants_webhooks(prediction):
            return
        pid, events = prediction.id, prediction.webhook_events
        if "start" in events:
            self.scheduler.schedule(
                prediction.created_at, lambda: self._progress_webhook(pid, "start", generation)
            )
        if "logs" in events and prediction.outcome != Outcome.ABORTED:
            self.scheduler.schedule(
                prediction.start_at, lambda: self._progress_webhook(pid, "logs", generation)
            )
        end = prediction.planned_end()
        if end is not None:
            self.scheduler.schedule(end, lambda: self._complete_webhook(pid, generation))

    def _progress_webhook(self, prediction_id: str, event: str, generation: int) -> None:
        """An intermediate event: sent once, never retried, skipped once the end is known."""
        with self._lock:
            prediction = self._predictions.get(prediction_id)
            if prediction is None or generation != self._generation:
                return
            if prediction.completion_notified or prediction.is_terminal(self.clock.time()):
                return
            payload = self._snapshot(prediction)
        self.webhooks.send(
            prediction_id=prediction_id,
            url=prediction.webhook or "",
            event=event,
            payload=payload,
            generation=generation,
            retry=False,
        )

    def _complete_webhook(self, prediction_id: str, generation: int) -> None:
        """The final event (``completed``, or ``output`` alone), retried on failure."""
        with self._lock:
            prediction = self._predictions.get(prediction_id)
            if prediction is None or generation != self._generation:
                return
            if prediction.completion_notified:
                return
            now = self.clock.time()
            if not prediction.is_terminal(now):
                finished = prediction.finished_at()
                if finished is None and prediction.outcome == Outcome.HANG:
                    return
                # A render still under way has no known end (with a deadline, `finished_at`
                # says the deadline): look again soon, not at the deadline.
                if prediction.render_pending() or finished is None or finished <= now:
                    due = now + _RENDER_RECHECK
                else:
                    due = finished
                self.scheduler.schedule(
                    due, lambda: self._complete_webhook(prediction_id, generation)
                )
                return
            prediction.completion_notified = True
            payload = self._snapshot(prediction)
        events = prediction.webhook_events
        if "completed" in events:
            event = "completed"
        elif "output" in events and payload["status"] == "succeeded":
            event = "output"
        else:
            return
        self.webhooks.send(
            prediction_id=prediction_id,
            url=prediction.webhook or "",
            event=event,
            payload=payload,
            generation=generation,
            retry=event == "completed",
            copies=2 if prediction.webhook_mode == "twice" else 1,
        )

    def _output_bytes(self, prediction_id: str, name: str) -> bytes | None:
        found = self.output_file(prediction_id, name)
        return found[0] if found else None


def _limits(cfg: SimulatorConfig) -> tuple[int, float, int | None]:
    """The token bucket's rate, window and capacity."""
    return cfg.rate_limit, cfg.rate_limit_window, cfg.rate_limit_burst


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None
