"""A person using the web page in Chromium, against a live server, a real Celery worker (threads
of this process, consuming real Redis), PostgreSQL and the Replicate simulator.

Screenshots land in test-artifacts/browser/ whether the test passes or fails.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from avatars import errors
from avatars.models import Avatar
from avatars.selfies import MESSAGE_UNSUPPORTED, prepare_selfie_from_settings
from avatars.services import create_selfie_session
from credits.services import get_balance, grant_credits
from tests.avatars import selfie_corpus

pytestmark = pytest.mark.timeout(120)

SELFIE = Path(__file__).resolve().parents[1] / "fixtures" / "selfie-astronaut.jpg"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def _user_with_credits(username: str, credits: int):
    user = get_user_model().objects.create_user(username=username, password=f"{username}-pw-1")
    grant_credits(user=user, amount=credits, memo="browser test")
    return user


@contextmanager
def _page(chromium, artifacts_dir: Path, name: str, viewport: dict) -> Iterator:
    """A page in a new Chromium; on failure a last screenshot shows where the page stood."""
    shots = artifacts_dir / "browser"
    shots.mkdir(exist_ok=True)
    with chromium() as browser:
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page_errors: list[str] = []
        page.on("pageerror", lambda error: page_errors.append(str(error)))

        def shot(step: str) -> None:
            page.screenshot(path=shots / f"{name}-{step}.png", full_page=True)

        try:
            yield page, shot
            assert page_errors == [], page_errors
        except BaseException:
            page.screenshot(path=shots / f"{name}-FAILED.png", full_page=True)
            raise
        finally:
            context.close()


def _sign_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"{username}-pw-1")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("body[data-ready=true]")


def _drop_file(page, path: Path, content_type: str) -> None:
    """A real drag and drop as the browser delivers it: a DataTransfer holding a File."""
    page.evaluate(
        """async ({data, name, type}) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type}));
            const zone = document.getElementById("dropzone");
            for (const kind of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(kind, {
                    dataTransfer: transfer, bubbles: true, cancelable: true,
                }));
            }
        }""",
        {
            "data": base64.b64encode(path.read_bytes()).decode(),
            "name": path.name,
            "type": content_type,
        },
    )


def test_person_signs_in_uploads_generates_and_downloads_an_avatar(
    pipeline, live_server, chromium, artifacts_dir
):
    # Given a user with 3 credits, and a model slow enough to watch it work
    user = _user_with_credits("carol", 3)
    pipeline.configure(latency=4)

    with _page(chromium, artifacts_dir, "generate", DESKTOP) as (page, shot):
        _sign_in(page, live_server, "carol")
        page.wait_for_function("document.querySelector('#balance').textContent === '3'")
        shot("1-signed-in")

        # A file that is not an image: the API's own message, and nothing to generate from
        page.set_input_files(
            "#selfie-input",
            files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"}],
        )
        page.wait_for_selector("#selfie-status.error")
        assert page.text_content("#selfie-status") == MESSAGE_UNSUPPORTED
        assert page.is_disabled("#generate")

        # The real selfie: previewed and accepted
        page.set_input_files("#selfie-input", str(SELFIE))
        page.wait_for_selector("#selfie-status.success")
        assert page.evaluate("document.querySelector('#selfie-preview').naturalWidth") > 0
        page.get_by_text("Pop art", exact=True).click()
        assert page.is_checked("#style-pop_art")
        generate = page.get_by_role("button", name="Generate avatar")
        assert "1 credit" in generate.text_content()
        page.evaluate("window.__sameDocument = true")
        generate.click()

        # Live progress without reloading: status, a progress bar, elapsed time, a cancel button
        # (checked in one go, while the avatar is running; the page polls once a second)
        card = page.locator("#current .avatar-card")
        page.wait_for_function(
            """() => {
                const card = document.querySelector("#current .avatar-card");
                if (!card || card.dataset.status !== "running") return false;
                const progress = card.querySelector(".avatar-progress");
                return !progress.hidden && progress.value > 5
                    && card.querySelector(".avatar-status").textContent === "Drawing your avatar…"
                    && card.querySelector(".avatar-elapsed").textContent.endsWith(" elapsed")
                    && !card.querySelector(".avatar-cancel").hidden
                    && card.querySelector(".avatar-cancel").getAttribute("aria-label")
                        === "Cancel this avatar";
            }"""
        )
        page.wait_for_function("document.querySelector('#balance').textContent === '2'")
        shot("2-in-progress")

        # The finished avatar, at its real size, with a download link to the same image
        page.wait_for_selector("#current .avatar-card[data-status=succeeded]", timeout=30_000)
        image = card.locator("img.avatar-image")
        image.wait_for(state="visible")
        page.wait_for_function(
            "(() => { const i = document.querySelector('#current img.avatar-image');"
            " return i.complete && i.naturalWidth > 0; })()"
        )
        size = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert size == [1024, 1024]
        download = card.get_by_role("link", name="Download avatar (PNG, 1024×1024)")
        assert download.get_attribute("href") == image.get_attribute("src")
        assert download.get_attribute("download", timeout=1000).endswith(".png")
        fetched = page.evaluate(
            "async (url) => { const r = await fetch(url);"
            " return [r.status, r.headers.get('Content-Type')]; }",
            download.get_attribute("href"),
        )
        assert fetched == [200, "image/png"]
        assert not card.locator(".avatar-cancel").is_visible()
        assert page.evaluate("window.__sameDocument") is True
        shot("3-succeeded")

    avatar = Avatar.objects.get(owner=user)
    assert (avatar.status, avatar.style, avatar.width) == ("succeeded", "pop_art", 1024)


def test_refused_photo_shows_the_message_and_the_refund_on_a_phone(
    pipeline, live_server, chromium, artifacts_dir
):
    # Given a user with 2 credits, and a model whose safety system refuses the next picture
    user = _user_with_credits("dave", 2)
    pipeline.content_policy()

    with _page(chromium, artifacts_dir, "content-policy", PHONE) as (page, shot):
        _sign_in(page, live_server, "dave")
        page.wait_for_function("document.querySelector('#balance').textContent === '2'")

        # The selfie arrives by drag and drop
        _drop_file(page, SELFIE, "image/jpeg")
        page.wait_for_selector("#selfie-status.success")
        page.get_by_role("button", name="Generate avatar").click()

        # The user-facing message, the refund, and the balance as it was
        card = page.locator("#current .avatar-card")
        page.wait_for_selector("#current .avatar-card[data-status=failed]", timeout=30_000)
        assert card.locator(".avatar-error").text_content() == errors.CONTENT_POLICY.message
        card.locator(".avatar-refund").wait_for(state="visible")
        assert card.locator(".avatar-refund").text_content() == "Your credit was refunded."
        page.wait_for_function("document.querySelector('#balance').textContent === '2'")
        # Phone-sized: nothing sticks out sideways
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        shot("1-refused-and-refunded")

        # A generation that hangs is canceled from its card, and refunded too
        pipeline.hang()
        page.get_by_role("button", name="Generate avatar").click()
        page.wait_for_selector("#current .avatar-card[data-status=running]")
        page.locator("#current").get_by_role("button", name="Cancel this avatar").click()
        page.wait_for_selector("#current .avatar-card[data-status=canceled]")
        assert card.locator(".avatar-refund").text_content() == "Your credit was refunded."
        page.wait_for_function("document.querySelector('#balance').textContent === '2'")
        # The refused one moved to the gallery of earlier avatars
        assert page.locator("#gallery .avatar-card[data-status=failed]").count() == 1
        shot("2-canceled")

        # After a reload the gallery comes from the API: both earlier avatars are there
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        statuses = page.locator("#gallery .avatar-card").evaluate_all(
            "cards => cards.map(card => card.dataset.status)"
        )
        assert statuses == ["canceled", "failed"]
        shot("3-gallery")

    assert get_balance(user=user) == 2
    assert sorted(Avatar.objects.filter(owner=user).values_list("status", flat=True)) == [
        "canceled",
        "failed",
    ]


def _finished_an_hour_ago_in(seconds: float) -> None:
    """Someone's avatar that took `seconds` from request to image, ten minutes ago."""
    someone = get_user_model().objects.create_user(username="someone", password="someone-pw-1")
    session = create_selfie_session(
        owner=someone, selfie=prepare_selfie_from_settings(SELFIE.read_bytes())
    )
    ended = timezone.now() - timedelta(minutes=10)
    Avatar.objects.create(
        owner=someone,
        session=session,
        style="comic",
        prompt_version="v1",
        status="succeeded",
        created_at=ended - timedelta(seconds=seconds),
        completed_at=ended,
    )


def test_a_photo_without_a_face_warns_before_paying_and_may_be_used_anyway(
    pipeline, live_server, chromium, artifacts_dir
):
    # Given a user with 2 credits, a photo of a landscape, and avatars taking 40 s lately
    user = _user_with_credits("erin", 2)
    landscape = {"name": "view.jpg", "mimeType": "image/jpeg", "buffer": selfie_corpus.landscape()}
    _finished_an_hour_ago_in(40)

    with _page(chromium, artifacts_dir, "face-check", DESKTOP) as (page, shot):
        _sign_in(page, live_server, "erin")
        # How long it takes, before paying
        page.wait_for_selector("#typical-wait:not([hidden])")
        assert page.text_content("#typical-wait") == "Usually ready in about 40 s."
        page.set_input_files("#selfie-input", files=[landscape])

        # The warning, with both ways on, and nothing to pay for until one is chosen
        warning = page.locator("#face-warning")
        warning.wait_for(state="visible")
        assert "could not find a face" in warning.text_content()
        assert page.get_by_role("button", name="Choose another photo").is_visible()
        assert page.is_disabled("#generate")
        shot("1-warned")

        page.get_by_role("button", name="Use this photo anyway").click()
        assert warning.is_hidden()
        pipeline.configure(latency=3)
        page.get_by_role("button", name="Generate avatar").click()
        # The progress bar follows the estimate: a few seconds into a 40 s wait, a few percent
        page.wait_for_selector("#current .avatar-card[data-status=running]")
        progress = page.locator("#current .avatar-progress")
        assert 5 <= int(progress.get_attribute("value")) <= 25
        page.wait_for_selector("#current .avatar-card[data-status=succeeded]", timeout=30_000)
        page.wait_for_function("document.querySelector('#balance').textContent === '1'")
        shot("2-used-anyway")

        # A portrait after it passes without a word
        page.set_input_files("#selfie-input", str(SELFIE))
        page.wait_for_selector("#selfie-status.success")
        assert warning.is_hidden() and page.is_enabled("#generate")

    assert Avatar.objects.get(owner=user).status == "succeeded"
    assert Avatar.objects.get(owner=user).session.face_check == "no_face"
