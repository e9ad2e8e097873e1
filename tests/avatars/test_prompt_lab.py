"""`manage.py prompt_lab` against the in-process Replicate simulator.

The command builds requests exactly as the pipeline does, so these tests check what reached the
simulator (one create per formulation and style, the right prompts) and what people will see in
the contact sheet (an image or an error for every cell, never the OpenAI key).
"""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from avatars import prompts, replicate_client
from avatars.management.commands import prompt_lab

SELFIE = Path(__file__).resolve().parents[1] / "fixtures" / "selfie-astronaut.jpg"
OPENAI_KEY = "sk-test"
# A name that needs escaping, to show the sheet escapes what comes from the variants file.
VARIANT = {
    "name": "short & <bold>",
    "template": "A full-body drawing of the person in the photo, in the style of {look}.",
}
CURRENT = prompts.PROMPT_VERSION


class _Sheet(HTMLParser):
    """The cells of index.html: (formulation, style) -> the image path or the error text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], dict] = {}
        self.by_model: dict[tuple[str, str, str], dict] = {}
        self._cell: dict | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "td" and "data-style" in values:
            self._cell = {"image": None, "text": ""}
            self.cells[(values["data-formulation"], values["data-style"])] = self._cell
            key = (values["data-formulation"], values["data-model"], values["data-style"])
            self.by_model[key] = self._cell
        elif tag == "img" and self._cell is not None:
            self._cell["image"] = values["src"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data


@pytest.fixture
def lab(settings, replicate_simulator, tmp_path):
    settings.REPLICATE_BASE_URL = replicate_simulator.base_url
    settings.REPLICATE_API_TOKEN = replicate_simulator.token
    settings.OPENAI_API_KEY = OPENAI_KEY
    settings.AVATAR_OUTPUT_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.AVATAR_OUTPUT_ALLOW_HTTP = True
    settings.AVATAR_OUTPUT_ALLOW_PRIVATE_ADDRESSES = True
    return replicate_simulator


def _variants_file(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "variants.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _run(tmp_path: Path, *extra: str, variants: object = (VARIANT,)) -> tuple[Path, str, str]:
    """Run the command for comic and manga; return the out dir, stdout and stderr."""
    out = tmp_path / "sheet"
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(
        "prompt_lab",
        "--selfie",
        str(SELFIE),
        "--styles",
        "comic",
        "manga",
        "--variants",
        str(_variants_file(tmp_path, list(variants))),
        "--out",
        str(out),
        *extra,
        stdout=stdout,
        stderr=stderr,
    )
    return out, stdout.getvalue(), stderr.getvalue()


def _creates(simulator) -> list[dict]:
    return simulator.requests(method="POST", path="/v1/models/openai/gpt-image-1/predictions")


def test_sheet_has_a_1024_png_for_every_formulation_and_style(lab, tmp_path):
    out, stdout, _ = _run(tmp_path)

    index = out / "index.html"
    html = index.read_text()
    assert stdout.splitlines() == [str(index.resolve()), "4 succeeded, 0 failed"]
    for text in ("Comic", "Manga", CURRENT, "short &amp; &lt;bold&gt;"):
        assert text in html
    assert "<bold>" not in html
    assert 'src="selfie.jpg"' in html and (out / "selfie.jpg").is_file()
    cells = _Sheet(html).cells
    assert set(cells) == {
        (name, style) for name in (CURRENT, VARIANT["name"]) for style in ("comic", "manga")
    }
    for cell in cells.values():
        assert cell["image"].endswith(".png") and "/" not in cell["image"]
        with Image.open(out / cell["image"]) as image:
            assert (image.format, image.size) == ("PNG", (1024, 1024))
        assert "predict_time" in cell["text"]


def test_simulator_receives_one_create_per_formulation_and_style_with_its_prompt(
    lab, tmp_path, settings
):
    _run(tmp_path)

    inputs = [request["body"]["input"] for request in _creates(lab)]
    assert sorted(payload["prompt"] for payload in inputs) == sorted(
        [
            prompts.build_prompt("comic"),
            prompts.build_prompt("manga"),
            VARIANT["template"].format(look=prompts.STYLES["comic"].look),
            VARIANT["template"].format(look=prompts.STYLES["manga"].look),
        ]
    )
    for payload in inputs:
        assert payload["input_images"][0].startswith("data:image/jpeg;base64,")
        assert payload["quality"] == settings.AVATAR_IMAGE_QUALITY
        assert payload["input_fidelity"] == "high"
        assert payload["openai_api_key"] == "[REDACTED]"  # sent; the simulator's log hides it


def test_models_are_compared_row_by_row_each_with_its_own_input_and_cost(lab, tmp_path, settings):
    settings.AVATAR_IMAGE_QUALITY = "medium"
    out, stdout, _ = _run(tmp_path, "--models", "openai/gpt-image-1", "openai/gpt-image-2")

    assert stdout.splitlines()[-1] == "8 succeeded, 0 failed"
    cells = _Sheet((out / "index.html").read_text()).by_model
    assert {(model, style) for _, model, style in cells} == {
        (model, style)
        for model in ("openai/gpt-image-1", "openai/gpt-image-2")
        for style in ("comic", "manga")
    }
    # gpt-image-2 takes no input_fidelity and no key; the simulator refuses what it does not know
    newer = lab.requests(method="POST", path="/v1/models/openai/gpt-image-2/predictions")
    assert len(newer) == 4 and len(_creates(lab)) == 4
    for request in newer:
        assert "input_fidelity" not in request["body"]["input"]
        assert "openai_api_key" not in request["body"]["input"]
    # Priced as the pipeline prices them: per image for gpt-image-2, its tokens for gpt-image-1
    assert _cost(cells[(CURRENT, "openai/gpt-image-2", "comic")]) == 0.07
    assert 0.05 < _cost(cells[(CURRENT, "openai/gpt-image-1", "comic")]) < 0.2  # tokens, not $0.001


def _cost(cell: dict) -> float:
    return float(re.search(r"\$(\d+\.\d+)", cell["text"]).group(1))


def test_an_unknown_model_is_refused_before_anything_is_sent(lab, tmp_path):
    with pytest.raises(CommandError, match="unknown model.*dall-e"):
        _run(tmp_path, "--models", "openai/dall-e")
    assert _creates(lab) == []


def test_content_policy_failure_is_an_error_cell_and_the_others_still_succeed(lab, tmp_path):
    lab.content_policy(count=1)  # the first prediction created: current version, comic

    out, stdout, _ = _run(tmp_path)

    assert stdout.splitlines()[-1] == "3 succeeded, 1 failed"
    cells = _Sheet((out / "index.html").read_text()).cells
    refused = cells[(CURRENT, "comic")]
    assert refused["image"] is None
    assert "content_policy" in refused["text"] and "moderation_blocked" in refused["text"]
    assert refused["text"].count("prediction") >= 1  # its id is still shown
    others = [cell for key, cell in cells.items() if key != (CURRENT, "comic")]
    assert len(others) == 3 and all((out / cell["image"]).is_file() for cell in others)


def test_openai_key_is_never_written_or_printed_even_when_an_error_quotes_it(lab, tmp_path):
    lab.fail(f"Incorrect API key provided: {OPENAI_KEY}. You can find your API key at ...")

    out, stdout, stderr = _run(tmp_path, "--verbosity", "2")

    html = (out / "index.html").read_text()
    assert "provider_auth" in html and "[redacted]" in html
    for text in (html, stdout, stderr):
        assert OPENAI_KEY not in text


def test_prediction_running_past_the_timeout_is_canceled_and_shown_as_timeout(lab, tmp_path):
    lab.hang(count=1)

    out, stdout, _ = _run(tmp_path, "--timeout", "1")

    assert stdout.splitlines()[-1] == "3 succeeded, 1 failed"
    hung = _Sheet((out / "index.html").read_text()).cells[(CURRENT, "comic")]
    assert hung["image"] is None and "timeout" in hung["text"]
    cancels = [r for r in lab.requests(method="POST") if r["path"].endswith("/cancel")]
    assert len(cancels) == 1 and cancels[0]["status"] == 200


def test_large_selfie_is_uploaded_once_and_deleted_after_the_run(lab, tmp_path, monkeypatch):
    monkeypatch.setattr(replicate_client, "DATA_URI_MAX_BYTES", 1)

    _, stdout, _ = _run(tmp_path, variants=())

    assert stdout.splitlines()[-1] == "2 succeeded, 0 failed"
    uploads = lab.requests(method="POST", path="/v1/files")
    assert len(uploads) == 1
    images = {request["body"]["input"]["input_images"][0] for request in _creates(lab)}
    assert len(images) == 1 and images.pop().startswith("http")
    assert len(lab.files()["deletions"]) == 1


def test_unknown_style_is_refused_before_anything_is_sent(lab, tmp_path):
    with pytest.raises(CommandError, match="unknown style.*cubism"):
        call_command("prompt_lab", "--selfie", str(SELFIE), "--styles", "comic", "cubism")
    assert lab.requests() == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"name": "x", "template": "{look}"}, "must hold a JSON list"),
        (["just a string"], "expected an object"),
        ([{"template": "{look}"}], '"name" must be a non-empty string'),
        ([{"name": " ", "template": "{look}"}], '"name" must be a non-empty string'),
        ([{"name": "a"}], "containing {look}"),
        ([{"name": "a", "template": "no placeholder"}], "containing {look}"),
        ([{"name": "a", "template": "{look} and {face}"}], "only use the placeholder"),
        ([{"name": "a", "template": "{look} with a stray {"}], "only use the placeholder"),
        ([{"name": "a", "template": "{look}"}, {"name": "a", "template": "{look}"}], "already"),
        ([{"name": CURRENT, "template": "{look}"}], "current prompt version"),
    ],
)
def test_bad_variants_file_is_refused_before_anything_is_sent(lab, tmp_path, content, message):
    variants = _variants_file(tmp_path, content)

    with pytest.raises(CommandError, match=message.replace("{", r"\{").replace("}", r"\}")):
        call_command("prompt_lab", "--selfie", str(SELFIE), "--variants", str(variants))
    assert lab.requests() == []


def test_missing_variants_file_is_refused(lab, tmp_path):
    with pytest.raises(CommandError, match="cannot read variants file"):
        call_command(
            "prompt_lab", "--selfie", str(SELFIE), "--variants", str(tmp_path / "none.json")
        )


def test_selfie_that_is_not_an_image_is_refused(lab, tmp_path):
    selfie = tmp_path / "selfie.jpg"
    selfie.write_bytes(b"<html>not a photo</html>")

    with pytest.raises(CommandError, match="refused \\(unsupported_type\\)"):
        call_command("prompt_lab", "--selfie", str(selfie), "--out", str(tmp_path / "out"))
    assert lab.requests() == []


def test_example_variants_file_is_valid():
    example = Path(prompt_lab.__file__).resolve().parents[2] / "prompt_variants.example.json"

    variants = prompt_lab.load_variants(example)

    assert variants and all("{look}" in variant.template for variant in variants)
