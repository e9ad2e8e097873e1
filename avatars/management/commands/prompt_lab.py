"""Compare prompt formulations on one selfie, side by side, in an HTML contact sheet.

Prompt wording changes by adding a new version to `avatars.prompts`; this command is how people
judge a candidate wording before it becomes one. It builds each request exactly as the pipeline
does (same template, payload, model and download allow-list) so what the sheet shows is what
users would get, but it stores nothing in the database and bills no one's credits. It works
against the Replicate simulator as well (`REPLICATE_BASE_URL`).

    manage.py prompt_lab --selfie me.jpg [--styles comic manga] [--variants variants.json]
        [--models openai/gpt-image-1 openai/gpt-image-2] [--out DIR] [--timeout SECONDS]

Each row of the sheet is one formulation on one model (`--models`, default `REPLICATE_MODEL`),
and each cell says what its prediction cost, priced as the pipeline prices it.

The variants file is a JSON list of `{"name": "...", "template": "... {look} ..."}` objects
(see `avatars/prompt_variants.example.json`).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import product
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.template import Context, Engine
from django.utils.text import slugify
from PIL import Image, UnidentifiedImageError

from avatars import costs, errors, image_models, prompts, replicate_client, storage
from avatars.errors import ErrorKind
from avatars.replicate_client import PredictionState, ReplicateCallError
from avatars.selfies import InvalidSelfie, prepare_selfie_from_settings

# Polling: quick at first (the simulator answers in well under a second), then no more often
# than every few seconds (the real model takes 30-50 s).
POLL_INITIAL_DELAY = 0.25
POLL_MAX_DELAY = 5.0
# An output URL that does not answer now (network, 5xx) is worth a few more tries: the image
# has been paid for and disappears from Replicate within the hour.
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_RETRY_DELAY = 2.0
_IMAGE_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
REDACTED = "[redacted]"


@dataclass(frozen=True)
class Formulation:
    """A prompt template to try: the current built-in version or a variant from a file."""

    name: str
    template: str
    builtin: bool = False

    def prompt_for(self, style_id: str) -> str:
        if self.builtin:
            return prompts.build_prompt(style_id, self.name)
        return self.template.format(look=prompts.STYLES[style_id].look)


@dataclass
class Cell:
    """One (formulation, model, style) and what became of its prediction."""

    row: int
    formulation: Formulation
    model: str
    style: prompts.Style
    prompt: str
    prediction_id: str = ""
    status: str = "not created"
    predict_time: float | None = None
    deadline: float = 0.0
    image: str = ""
    width: int | None = None
    height: int | None = None
    error: ErrorKind | None = None
    detail: str = ""
    cost_usd: Decimal | None = None

    @property
    def pending(self) -> bool:
        return bool(self.prediction_id) and not self.image and self.error is None

    @property
    def summary(self) -> str:
        parts = [self.status]
        if self.predict_time is not None:
            parts.append(f"predict_time {self.predict_time:.1f} s")
        if self.width:
            parts.append(f"{self.width}x{self.height}")
        if self.cost_usd is not None:
            parts.append(f"${self.cost_usd:.4f}")
        return ", ".join(parts)

    def fail(self, kind: ErrorKind, detail: str) -> None:
        self.error = kind
        self.detail = detail


class Command(BaseCommand):
    help = (
        "Run prompt formulations (the current prompt version plus variants from a JSON file) "
        "for the given styles on one selfie and write an HTML contact sheet to compare them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--selfie", required=True, type=Path, help="a JPEG, PNG or WebP photo")
        parser.add_argument(
            "--styles",
            nargs="+",
            default=list(prompts.STYLES),
            metavar="STYLE",
            help=f"styles to try (default: all of {', '.join(prompts.STYLES)})",
        )
        parser.add_argument(
            "--variants",
            type=Path,
            help='JSON list of {"name": ..., "template": "... {look} ..."} to compare',
        )
        parser.add_argument(
            "--models",
            nargs="+",
            metavar="MODEL",
            help="models to compare (default: REPLICATE_MODEL; any of "
            f"{', '.join(image_models.MODELS)})",
        )
        parser.add_argument(
            "--out", type=Path, help="output directory (default: prompt-lab/<UTC timestamp>/)"
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=300.0,
            help="seconds to wait for each prediction before canceling it (default: 300)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = datetime.now(tz=UTC)
        self.verbosity = options["verbosity"]
        styles = _parse_choices("style", options["styles"], prompts.STYLES)
        models = _parse_choices(
            "model", options["models"] or [settings.REPLICATE_MODEL], image_models.MODELS
        )
        formulations = [
            Formulation(prompts.PROMPT_VERSION, prompts.TEMPLATES[prompts.PROMPT_VERSION], True)
        ]
        if options["variants"] is not None:
            formulations += load_variants(options["variants"])
        if options["timeout"] <= 0:
            raise CommandError("--timeout must be a positive number of seconds")
        if not settings.REPLICATE_API_TOKEN:
            raise CommandError(
                "REPLICATE_API_TOKEN is not set (or point REPLICATE_BASE_URL at "
                "the simulator and give it any token)"
            )
        selfie = _read_selfie(options["selfie"])
        out_dir: Path = options["out"] or Path("prompt-lab") / started.strftime("%Y%m%dT%H%M%SZ")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "selfie.jpg").write_bytes(selfie)

        cells = [
            Cell(
                row, formulation, model, prompts.STYLES[style_id], formulation.prompt_for(style_id)
            )
            for row, (formulation, model) in enumerate(product(formulations, models))
            for style_id in styles
        ]
        interrupted = False
        uploaded: replicate_client.UploadedFile | None = None
        try:
            image, uploaded = self._selfie_reference(selfie)
            self._create_all(cells, image, options["timeout"])
            self._wait_for_all(cells, out_dir)
        except ReplicateCallError as exc:
            # Only the selfie upload gets here: without it no prediction can be made.
            for cell in cells:
                if cell.error is None and not cell.image:
                    cell.fail(exc.kind, f"selfie upload failed: {self._redact(exc.detail)}")
        except KeyboardInterrupt:
            interrupted = True
            self._cancel_pending(cells, "interrupted; prediction canceled")
        finally:
            if uploaded is not None:
                _delete_file_quietly(uploaded.id)

        index = out_dir / "index.html"
        index.write_text(self._render(cells, models, styles, started), encoding="utf-8")
        succeeded = sum(1 for cell in cells if cell.image)
        self.stdout.write(str(index.resolve()))
        self.stdout.write(f"{succeeded} succeeded, {len(cells) - succeeded} failed")
        if interrupted:
            raise CommandError("interrupted: unfinished predictions were canceled")

    # --- talking to Replicate ----------------------------------------------------------------

    def _selfie_reference(self, content: bytes) -> tuple[str, replicate_client.UploadedFile | None]:
        """A data URI when small enough (DESIGN.md §5), else one upload shared by every cell."""
        return replicate_client.image_input(
            content, filename="prompt-lab-selfie.jpg", content_type="image/jpeg"
        )

    def _create_all(self, cells: list[Cell], image: str, timeout: float) -> None:
        """Start every prediction before waiting on any, so the run takes one model latency."""
        for cell in cells:
            payload = image_models.build_model_input(
                image_models.get_model(cell.model),
                prompt=cell.prompt,
                image=image,
                user_id=prompts.opaque_user_id(0),
                openai_api_key=settings.OPENAI_API_KEY,
                quality=settings.AVATAR_IMAGE_QUALITY,
            )
            try:
                state = replicate_client.create_prediction(model=cell.model, input=payload)
            except ReplicateCallError as exc:
                cell.fail(exc.kind, f"create failed: {self._redact(exc.detail)}")
                self._note(cell, exc.kind.code)
                continue
            cell.prediction_id = state.id
            cell.status = state.status
            cell.deadline = time.monotonic() + timeout
            self._note(cell, f"created {state.id}")

    def _wait_for_all(self, cells: list[Cell], out_dir: Path) -> None:
        """Poll until every prediction ended or ran out of time; download outputs as they come."""
        pending = [cell for cell in cells if cell.pending]
        if pending and self.verbosity >= 1:
            self.stderr.write(f"waiting for {len(pending)} predictions...")
        delay = POLL_INITIAL_DELAY
        while pending:
            for cell in pending:
                if time.monotonic() >= cell.deadline:
                    _cancel_quietly(cell.prediction_id)
                    cell.status = "canceled"
                    cell.fail(errors.TIMEOUT, "no result before --timeout; prediction canceled")
                    self._note(cell, errors.TIMEOUT.code)
                    continue
                try:
                    state = replicate_client.get_prediction(cell.prediction_id)
                except ReplicateCallError as exc:
                    if not exc.retryable:
                        cell.fail(exc.kind, f"poll failed: {self._redact(exc.detail)}")
                    continue
                cell.status = state.status
                if state.is_terminal:
                    self._finish(cell, state, out_dir)
                    self._note(cell, cell.error.code if cell.error else "succeeded")
            pending = [cell for cell in pending if cell.pending]
            if pending:
                time.sleep(delay)
                delay = min(delay * 1.5, POLL_MAX_DELAY)

    def _finish(self, cell: Cell, state: PredictionState, out_dir: Path) -> None:
        """Turn a terminal prediction into an image file or an error, like the pipeline does."""
        cell.predict_time = state.predict_time
        cell.cost_usd = costs.price_prediction(
            model=cell.model,
            quality=settings.AVATAR_IMAGE_QUALITY,
            images=1 if state.status == "succeeded" else 0,
            usage=costs.read_token_usage(state.logs),
        )
        if state.status == "failed":
            cell.fail(errors.classify_prediction_error(state.error), self._redact(state.error))
            return
        if state.status != "succeeded":
            cell.fail(errors.CANCELED, f"prediction {state.status}")
            return
        if state.data_removed:
            cell.fail(errors.OUTPUT_UNAVAILABLE, "Replicate already removed the output")
            return
        url = state.output_url
        if url is None:
            cell.fail(errors.EMPTY_OUTPUT, "succeeded without an output")
            return
        try:
            content = _download(url)
            with Image.open(io.BytesIO(content), formats=list(_IMAGE_EXTENSIONS)) as picture:
                picture.load()
                cell.width, cell.height = picture.size
                extension = _IMAGE_EXTENSIONS[picture.format]
        except (storage.OutputRefused, storage.OutputGone, storage.OutputUnreachable) as exc:
            cell.fail(errors.OUTPUT_UNAVAILABLE, f"download failed: {exc}")
            return
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            cell.fail(errors.OUTPUT_UNAVAILABLE, f"output is not a readable image: {exc}")
            return
        name = f"{cell.row:02d}-{slugify(cell.formulation.name) or 'variant'}-{cell.style.id}"
        name += f"-{slugify(cell.model.rsplit('/', 1)[-1])}"
        cell.image = f"{name}.{extension}"
        (out_dir / cell.image).write_bytes(content)

    def _cancel_pending(self, cells: list[Cell], detail: str) -> None:
        """Stop paying for predictions nobody will look at."""
        for cell in cells:
            if cell.pending:
                _cancel_quietly(cell.prediction_id)
                cell.status = "canceled"
                cell.fail(errors.CANCELED, detail)

    def _redact(self, text: str | None) -> str:
        """Provider error texts may quote the key they were given; never let it reach a file."""
        text = str(text or "")
        for secret in (settings.OPENAI_API_KEY, settings.REPLICATE_API_TOKEN):
            if secret:
                text = text.replace(secret, REDACTED)
        return text

    def _note(self, cell: Cell, what: str) -> None:
        if self.verbosity >= 2:
            self.stderr.write(f"{cell.formulation.name} / {cell.model} / {cell.style.id}: {what}")

    # --- the contact sheet -------------------------------------------------------------------

    def _render(
        self,
        cells: list[Cell],
        models: list[str],
        styles: list[str],
        started: datetime,
    ) -> str:
        by_row: dict[int, list[Cell]] = {}
        for cell in cells:
            by_row.setdefault(cell.row, []).append(cell)
        rows = [
            {"formulation": row[0].formulation, "model": row[0].model, "cells": row}
            for row in by_row.values()
        ]
        context = {
            "rows": rows,
            "styles": [prompts.STYLES[style_id] for style_id in styles],
            "models": models,
            "provider": settings.REPLICATE_BASE_URL,
            "quality": settings.AVATAR_IMAGE_QUALITY,
            "date": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "succeeded": sum(1 for cell in cells if cell.image),
            "failed": sum(1 for cell in cells if not cell.image),
        }
        return _ENGINE.from_string(SHEET_TEMPLATE).render(Context(context))


def load_variants(path: Path) -> list[Formulation]:
    """Read and check a variants file; every mistake is a CommandError saying where it is."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CommandError(f"cannot read variants file {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CommandError(f"variants file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise CommandError(
            f'variants file {path} must hold a JSON list of {{"name", "template"}} objects'
        )
    names = {prompts.PROMPT_VERSION}
    variants = []
    for index, item in enumerate(data):
        where = f"variants file {path}, item {index}"
        if not isinstance(item, dict):
            raise CommandError(f'{where}: expected an object {{"name", "template"}}')
        name, template = item.get("name"), item.get("template")
        if not isinstance(name, str) or not name.strip():
            raise CommandError(f'{where}: "name" must be a non-empty string')
        name = name.strip()
        if name in names:
            raise CommandError(
                f"{where}: the name {name!r} is already used"
                + (" by the current prompt version" if name == prompts.PROMPT_VERSION else "")
            )
        if not isinstance(template, str) or "{look}" not in template:
            raise CommandError(f'{where} ({name}): "template" must be a string containing {{look}}')
        try:
            template.format(look="")
        except (KeyError, IndexError, ValueError) as exc:
            raise CommandError(
                f"{where} ({name}): the template may only use the placeholder {{look}} "
                f"(write literal braces as {{{{ and }}}}): {exc!r}"
            ) from exc
        names.add(name)
        variants.append(Formulation(name, template))
    return variants


def _parse_choices(kind: str, requested: list[str], known: dict) -> list[str]:
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise CommandError(
            f"unknown {kind}(s): {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return list(dict.fromkeys(requested))  # in the order asked, once each


def _read_selfie(path: Path) -> bytes:
    """The selfie as the service would store it: validated, re-encoded, metadata stripped."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read selfie {path}: {exc.strerror or exc}") from exc
    try:
        return prepare_selfie_from_settings(data).content
    except InvalidSelfie as exc:
        raise CommandError(f"selfie {path} refused ({exc.reason}): {exc.message}") from exc


def _download(url: str) -> bytes:
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            return storage.download_output(url)
        except storage.OutputUnreachable:
            if attempt == DOWNLOAD_ATTEMPTS:
                raise
            time.sleep(DOWNLOAD_RETRY_DELAY)
    raise AssertionError("unreachable")  # pragma: no cover


def _cancel_quietly(prediction_id: str) -> None:
    try:
        replicate_client.cancel_prediction(prediction_id)
    except ReplicateCallError:
        pass  # it ends on its own; the sheet already says it was given up


def _delete_file_quietly(file_id: str) -> None:
    try:
        replicate_client.delete_file(file_id)
    except ReplicateCallError:
        pass  # Replicate deletes uploaded files after 24 hours anyway


# A standalone engine: the sheet must not depend on the project's template settings.
_ENGINE = Engine(autoescape=True)

SHEET_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Prompt lab {{ date }}</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
  header { display: flex; gap: 1.5rem; align-items: flex-start; margin-bottom: 1.5rem; }
  header img { width: 160px; border-radius: 6px; border: 1px solid #ccc; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: .2rem 1rem; margin: 0; }
  dt { font-weight: 600; }
  dd { margin: 0; }
  details { margin: .4rem 0; }
  details p { white-space: pre-wrap; font-size: .85rem; background: #f6f6f6; padding: .5rem; }
  table { border-collapse: collapse; }
  th, td { border: 1px solid #ddd; padding: .5rem; vertical-align: top; }
  th { background: #fafafa; }
  td { width: 320px; }
  td img { width: 320px; height: 320px; display: block; }
  .meta { font-size: .8rem; color: #555; margin-top: .3rem; word-break: break-all; }
  .error { width: 320px; min-height: 4rem; background: #fff0f0; color: #900; padding: .5rem; }
  .error p { margin: .3rem 0 0; font-size: .85rem; white-space: pre-wrap; }
</style>
</head>
<body>
<header>
  <img src="selfie.jpg" alt="the selfie">
  <div>
    <h1>Prompt lab</h1>
    <dl>
      <dt>Model{{ models|pluralize }}</dt><dd>{{ models|join:", " }}</dd>
      <dt>Provider</dt><dd>{{ provider }}</dd>
      <dt>Quality</dt><dd>{{ quality }}</dd>
      <dt>Date</dt><dd>{{ date }}</dd>
      <dt>Result</dt><dd>{{ succeeded }} succeeded, {{ failed }} failed</dd>
    </dl>
    <h2>Prompts</h2>
    {% for row in rows %}{% if row.model == models.0 %}
    <details>
      <summary>{{ row.formulation.name }}{% if row.formulation.builtin %}
        (current version){% endif %}</summary>
      <p>{{ row.formulation.template }}</p>
      {% for cell in row.cells %}
      <details>
        <summary>{{ cell.style.name }}</summary>
        <p>{{ cell.prompt }}</p>
      </details>
      {% endfor %}
    </details>
    {% endif %}{% endfor %}
  </div>
</header>
<table>
  <thead>
    <tr>
      <th>Formulation</th>
      {% for style in styles %}<th title="{{ style.description }}">{{ style.name }}<br>
        <code>{{ style.id }}</code></th>{% endfor %}
    </tr>
  </thead>
  <tbody>
    {% for row in rows %}
    <tr>
      <th>{{ row.formulation.name }}{% if row.formulation.builtin %}<br>
        <small>(current version)</small>{% endif %}<br><code>{{ row.model }}</code></th>
      {% for cell in row.cells %}
      <td data-formulation="{{ cell.formulation.name }}" data-model="{{ cell.model }}"
        data-style="{{ cell.style.id }}">
        {% if cell.image %}
        <a href="{{ cell.image }}"><img src="{{ cell.image }}" loading="lazy"
          alt="{{ cell.formulation.name }} / {{ cell.style.name }}"></a>
        {% else %}
        <div class="error"><strong>{{ cell.error.code }}</strong>
          <p>{{ cell.detail }}</p></div>
        {% endif %}
        <div class="meta">
          {% if cell.prediction_id %}prediction <code>{{ cell.prediction_id }}</code>
          {% else %}no prediction{% endif %}<br>
          {{ cell.summary }}
        </div>
      </td>
      {% endfor %}
    </tr>
    {% endfor %}
  </tbody>
</table>
</body>
</html>
"""
