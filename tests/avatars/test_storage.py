"""Unit tests for avatars.storage: the output allow-list, the download, the stored image.

Downloads go to a real HTTP server on 127.0.0.1 started for each test.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpcore
import pytest
from PIL import Image, ImageFile

from avatars import storage
from avatars.storage import (
    MAX_REDIRECTS,
    OutputGone,
    OutputRefused,
    OutputUnreachable,
    StoredImage,
    download_output,
    is_allowed_output_url,
    store_avatar_image,
)

STORAGE_ERRORS = (OutputRefused, OutputUnreachable, OutputGone)


# --- A real HTTP server for the delivery host ------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # False: no Content-Length; the body ends when the connection closes.
    content_length: bool = True
    # A Content-Length to declare instead of the body's real length.
    declared_length: int | None = None


@dataclass(frozen=True)
class Seen:
    host: str
    path: str


class DeliveryServer:
    """Answers each path with its Reply (404 for unknown paths) and records every request."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                server.seen.append(Seen(self.headers.get("host", ""), self.path))
                reply = server.replies.get(self.path, Reply(404, b"Not Found"))
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if reply.content_length:
                        length = reply.declared_length
                        self.send_header(
                            "Content-Length", str(len(reply.body) if length is None else length)
                        )
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading, as it should for an oversized body

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def delivery(settings) -> Iterator[DeliveryServer]:
    """The delivery host, on the allow-list as 127.0.0.1 over plain HTTP."""
    settings.AVATAR_OUTPUT_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.AVATAR_OUTPUT_ALLOW_HTTP = True
    settings.AVATAR_OUTPUT_ALLOW_PRIVATE_ADDRESSES = True
    server = DeliveryServer()
    yield server
    server.stop()


@pytest.fixture
def other_host() -> Iterator[DeliveryServer]:
    """A second server, reached as `localhost`: a host off the list."""
    server = DeliveryServer()
    yield server
    server.stop()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- Images -----------------------------------------------------------------------------------


def image_bytes(size: tuple[int, int] = (1024, 1024), fmt: str = "PNG", mode: str = "RGB") -> bytes:
    # Noise, so the encoded data is large enough to cut in the middle of the pixels.
    rng = random.Random(7)
    image = Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * len(mode)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def avatar_png() -> bytes:
    return image_bytes()


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def media_root(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


# --- is_allowed_output_url ---------------------------------------------------------------------


@pytest.fixture
def replicate_hosts(settings) -> None:
    settings.AVATAR_OUTPUT_ALLOWED_HOSTS = ["replicate.delivery", "*.replicate.delivery"]
    settings.AVATAR_OUTPUT_ALLOW_HTTP = False


@pytest.mark.parametrize(
    "url",
    [
        "https://replicate.delivery/xezq/abc/output.png",
        "https://pbxt.replicate.delivery/abc/output.webp",
        "https://REPLICATE.Delivery/abc/output.png",
        "https://replicate.delivery./abc/output.png",
        "https://tjzk.replicate.delivery:443/abc/output.png",
    ],
    ids=["exact", "subdomain", "upper-case", "trailing-dot", "explicit-port"],
)
def test_https_to_a_listed_host_is_allowed(replicate_hosts: None, url: str) -> None:
    assert is_allowed_output_url(url) is True


@pytest.mark.parametrize(
    "url",
    [
        "http://replicate.delivery/abc/output.png",
        "ftp://replicate.delivery/abc/output.png",
        "file:///etc/passwd",
        "//replicate.delivery/abc/output.png",
        "replicate.delivery/abc/output.png",
        "",
    ],
    ids=["http", "ftp", "file", "scheme-relative", "no-scheme", "empty"],
)
def test_anything_but_https_is_refused_by_default(replicate_hosts: None, url: str) -> None:
    assert is_allowed_output_url(url) is False


def test_http_is_allowed_only_when_the_setting_says_so(settings) -> None:
    # Given the delivery host is listed
    settings.AVATAR_OUTPUT_ALLOWED_HOSTS = ["replicate.delivery"]
    url = "http://replicate.delivery/abc/output.png"

    # Then plain HTTP depends on AVATAR_OUTPUT_ALLOW_HTTP alone
    settings.AVATAR_OUTPUT_ALLOW_HTTP = False
    assert is_allowed_output_url(url) is False
    settings.AVATAR_OUTPUT_ALLOW_HTTP = True
    assert is_allowed_output_url(url) is True
    # And HTTPS stays allowed either way
    assert is_allowed_output_url("https://replicate.delivery/abc/output.png") is True


@pytest.mark.parametrize(
    "url",
    [
        "https://replicate.delivery.evil.com/output.png",
        "https://evilreplicate.delivery/output.png",
        "https://evil.com/replicate.delivery/output.png",
        "https://evil.com/?next=https://replicate.delivery/",
        "https://evil.com#@replicate.delivery/",
        "https://replicate.delivery@evil.com/output.png",
        "https://user:pass@replicate.delivery/output.png",
        "https://replicate.delivery:@replicate.delivery/output.png",
        "https://127.0.0.1/output.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/output.png",
        "https://2130706433/output.png",
        "https://localhost/output.png",
        "https://xn--rplicate-9xa.delivery/output.png",
        "https://replicate-delivery/output.png",
    ],
    ids=[
        "listed-name-as-prefix",
        "listed-name-as-suffix-without-dot",
        "listed-name-in-path",
        "listed-name-in-query",
        "listed-name-in-fragment",
        "userinfo-trick",
        "userinfo-on-listed-host",
        "empty-password",
        "loopback-ip",
        "metadata-ip",
        "ipv6-loopback",
        "decimal-ip",
        "localhost",
        "look-alike-idn",
        "dash-for-dot",
    ],
)
def test_hosts_off_the_list_and_tricks_are_refused(replicate_hosts: None, url: str) -> None:
    assert is_allowed_output_url(url) is False


@pytest.mark.parametrize(
    ("listed", "url"),
    [
        ("127.0.0.1", "https://127.0.0.1/output.png"),
        ("169.254.169.254", "https://169.254.169.254/output.png"),
        ("::1", "https://[::1]/output.png"),
    ],
)
def test_an_ip_literal_is_allowed_only_when_listed(settings, listed: str, url: str) -> None:
    settings.AVATAR_OUTPUT_ALLOW_HTTP = False
    settings.AVATAR_OUTPUT_ALLOWED_HOSTS = ["*.replicate.delivery"]
    assert is_allowed_output_url(url) is False

    settings.AVATAR_OUTPUT_ALLOWED_HOSTS = ["*.replicate.delivery", listed]
    assert is_allowed_output_url(url) is True


def test_the_wildcard_needs_a_subdomain(settings) -> None:
    # Given only the wildcard is listed
    settings.AVATAR_OUTPUT_ALLOW_HTTP = False
    settings.AVATAR_OUTPUT_ALLOWED_HOSTS = ["*.replicate.delivery"]

    # Then the bare domain is not covered by it, but its subdomains are
    assert is_allowed_output_url("https://replicate.delivery/x.png") is False
    assert is_allowed_output_url("https://a.replicate.delivery/x.png") is True


@pytest.mark.parametrize(
    "url",
    [
        "https://[replicate.delivery/output.png",
        "https://replicate.delivery]/output.png",
        "https://replicate.delivery:abc/output.png",
        "https://replicate.delivery:99999/output.png",
    ],
    ids=["unclosed-bracket", "stray-bracket", "port-not-a-number", "port-out-of-range"],
)
def test_a_malformed_url_is_refused_not_an_error(replicate_hosts: None, url: str) -> None:
    # When the output URL can not be parsed
    # Then it is simply not allowed (the function answers a question; it does not raise)
    assert is_allowed_output_url(url) is False


# --- download_output ---------------------------------------------------------------------------


def test_an_output_answering_200_is_returned(delivery: DeliveryServer) -> None:
    # Given the delivery host serves the output
    delivery.replies["/p1/output.png"] = Reply(
        body=b"\x89PNG-bytes", headers={"Content-Type": "image/png"}
    )

    # When it is downloaded
    content = download_output(delivery.url("/p1/output.png"))

    # Then the bytes come back, from one request
    assert content == b"\x89PNG-bytes"
    assert delivery.paths() == ["/p1/output.png"]


@pytest.mark.parametrize("status", [404, 410])
def test_an_output_that_no_longer_exists_is_gone(delivery: DeliveryServer, status: int) -> None:
    delivery.replies["/p1/output.png"] = Reply(status, b"Not Found")
    with pytest.raises(OutputGone):
        download_output(delivery.url("/p1/output.png"))


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_a_server_error_or_throttle_is_unreachable_for_now(
    delivery: DeliveryServer, status: int
) -> None:
    delivery.replies["/p1/output.png"] = Reply(status, b"try later")
    with pytest.raises(OutputUnreachable):
        download_output(delivery.url("/p1/output.png"))


@pytest.mark.parametrize("status", [204, 400, 401, 403])
def test_any_other_answer_is_refused(delivery: DeliveryServer, status: int) -> None:
    delivery.replies["/p1/output.png"] = Reply(status, b"" if status == 204 else b"no")
    with pytest.raises(OutputRefused):
        download_output(delivery.url("/p1/output.png"))


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_an_allowed_url_is_followed(delivery: DeliveryServer, status: int) -> None:
    # Given the output moved to another path on the same (listed) host, by a relative Location
    delivery.replies["/p1/output.png"] = Reply(status, headers={"Location": "/moved/output.png"})
    delivery.replies["/moved/output.png"] = Reply(body=b"moved-bytes")

    # When it is downloaded
    # Then the redirect is followed to the bytes
    assert download_output(delivery.url("/p1/output.png")) == b"moved-bytes"
    assert delivery.paths() == ["/p1/output.png", "/moved/output.png"]


def test_an_absolute_redirect_to_an_allowed_host_is_followed(delivery: DeliveryServer) -> None:
    delivery.replies["/a"] = Reply(302, headers={"Location": delivery.url("/b")})
    delivery.replies["/b"] = Reply(body=b"ok")
    assert download_output(delivery.url("/a")) == b"ok"


def test_a_redirect_to_a_host_off_the_list_is_refused_before_it_is_requested(
    delivery: DeliveryServer, other_host: DeliveryServer
) -> None:
    # Given the listed host redirects to `localhost`, which is not on the list (127.0.0.1 is)
    other_host.replies["/internal"] = Reply(body=b"secret")
    delivery.replies["/p1/output.png"] = Reply(
        302, headers={"Location": other_host.url("/internal", host="localhost")}
    )

    # When the output is downloaded
    with pytest.raises(OutputRefused):
        download_output(delivery.url("/p1/output.png"))

    # Then the other host never received a request
    assert delivery.paths() == ["/p1/output.png"]
    assert other_host.seen == []


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
        "//localhost/output.png",
    ],
    ids=["metadata-ip", "file-scheme", "scheme-relative-to-another-host"],
)
def test_a_redirect_off_the_list_is_refused(delivery: DeliveryServer, location: str) -> None:
    delivery.replies["/p1/output.png"] = Reply(302, headers={"Location": location})
    with pytest.raises(OutputRefused):
        download_output(delivery.url("/p1/output.png"))


def test_a_plain_http_output_is_refused_without_a_request_unless_http_is_allowed(
    settings,
) -> None:
    # Given the host is listed but only HTTPS is allowed
    settings.AVATAR_OUTPUT_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.AVATAR_OUTPUT_ALLOW_HTTP = False
    server = DeliveryServer()
    try:
        server.replies["/p1/output.png"] = Reply(body=b"bytes")
        with pytest.raises(OutputRefused):
            download_output(server.url("/p1/output.png"))
        assert server.seen == []
    finally:
        server.stop()


def test_up_to_max_redirects_are_followed(delivery: DeliveryServer) -> None:
    # Given a chain of exactly MAX_REDIRECTS redirects
    for hop in range(MAX_REDIRECTS):
        delivery.replies[f"/r{hop}"] = Reply(302, headers={"Location": f"/r{hop + 1}"})
    delivery.replies[f"/r{MAX_REDIRECTS}"] = Reply(body=b"end")

    # Then the output at its end is returned
    assert download_output(delivery.url("/r0")) == b"end"
    assert len(delivery.seen) == MAX_REDIRECTS + 1


def test_more_than_max_redirects_is_refused(delivery: DeliveryServer) -> None:
    # Given a chain one redirect longer than allowed
    for hop in range(MAX_REDIRECTS + 1):
        delivery.replies[f"/r{hop}"] = Reply(302, headers={"Location": f"/r{hop + 1}"})
    delivery.replies[f"/r{MAX_REDIRECTS + 1}"] = Reply(body=b"end")

    # When it is downloaded
    with pytest.raises(OutputRefused, match="redirect"):
        download_output(delivery.url("/r0"))

    # Then the output at the end was never fetched
    assert f"/r{MAX_REDIRECTS + 1}" not in delivery.paths()
    assert len(delivery.seen) == MAX_REDIRECTS + 1


def test_a_redirect_loop_is_refused(delivery: DeliveryServer) -> None:
    delivery.replies["/loop"] = Reply(302, headers={"Location": "/loop"})
    with pytest.raises(OutputRefused):
        download_output(delivery.url("/loop"))
    assert len(delivery.seen) == MAX_REDIRECTS + 1


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(storage, "MAX_OUTPUT_BYTES", 1000)
    return 1000


def test_a_declared_length_over_the_cap_is_refused_before_reading_the_body(
    delivery: DeliveryServer, small_cap: int
) -> None:
    # Given a response declaring a huge body but sending only a few bytes: reading it would fail
    # as a truncated transfer (unreachable), so only the header can explain a refusal
    delivery.replies["/big"] = Reply(body=b"x" * 10, declared_length=10**9)

    with pytest.raises(OutputRefused, match="bytes"):
        download_output(delivery.url("/big"))


def test_a_body_over_the_cap_with_its_content_length_is_refused(
    delivery: DeliveryServer, small_cap: int
) -> None:
    delivery.replies["/big"] = Reply(body=b"x" * (small_cap + 1))
    with pytest.raises(OutputRefused):
        download_output(delivery.url("/big"))


def test_a_body_over_the_cap_without_content_length_is_refused_while_streaming(
    delivery: DeliveryServer, small_cap: int
) -> None:
    # Given a response with no Content-Length that simply sends too much
    delivery.replies["/big"] = Reply(body=b"x" * (small_cap * 50), content_length=False)

    with pytest.raises(OutputRefused, match="more than"):
        download_output(delivery.url("/big"))


@pytest.mark.parametrize("content_length", [True, False], ids=["declared", "undeclared"])
def test_a_body_of_exactly_the_cap_is_accepted(
    delivery: DeliveryServer, small_cap: int, content_length: bool
) -> None:
    delivery.replies["/full"] = Reply(body=b"y" * small_cap, content_length=content_length)
    assert download_output(delivery.url("/full")) == b"y" * small_cap


def test_a_refused_connection_is_unreachable(settings) -> None:
    settings.AVATAR_OUTPUT_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.AVATAR_OUTPUT_ALLOW_HTTP = True
    settings.AVATAR_OUTPUT_ALLOW_PRIVATE_ADDRESSES = True
    with pytest.raises(OutputUnreachable):
        download_output(f"http://127.0.0.1:{closed_port()}/output.png")


def test_a_download_to_a_host_off_the_list_is_refused_without_a_request(
    delivery: DeliveryServer,
) -> None:
    delivery.replies["/p1/output.png"] = Reply(body=b"bytes")
    with pytest.raises(OutputRefused):
        download_output(delivery.url("/p1/output.png", host="localhost"))
    assert delivery.seen == []


def test_a_body_that_fails_content_decoding_is_a_storage_error(
    delivery: DeliveryServer,
) -> None:
    # Given a body that claims gzip encoding but is not gzip
    delivery.replies["/p1/output.png"] = Reply(
        body=b"definitely not gzip", headers={"Content-Encoding": "gzip"}
    )

    # When it is downloaded
    # Then the failure is one of the storage errors the pipeline handles, not a raw httpx error
    with pytest.raises(STORAGE_ERRORS):
        download_output(delivery.url("/p1/output.png"))


@pytest.mark.parametrize(
    "make_url",
    [
        lambda port: f"http://127.0.0.1:abc{port}/output.png",
        lambda port: f"http://127.0.0.\t1:{port}/output.png",
        lambda port: f"http://[127.0.0.1:{port}/output.png",
    ],
    ids=["port-not-a-number", "tab-in-host", "unclosed-bracket"],
)
def test_an_unparseable_output_url_is_refused(delivery: DeliveryServer, make_url) -> None:
    # When the output URL is garbage
    # Then it is refused like any URL we will not fetch, not an unexpected exception
    with pytest.raises(OutputRefused):
        download_output(make_url(delivery.port))
    assert delivery.seen == []


def test_a_redirect_to_an_unparseable_location_is_refused(delivery: DeliveryServer) -> None:
    delivery.replies["/p1/output.png"] = Reply(302, headers={"Location": "http://[oops/"})
    with pytest.raises(OutputRefused):
        download_output(delivery.url("/p1/output.png"))


# --- store_avatar_image ------------------------------------------------------------------------


def test_a_1024_square_png_is_stored_under_an_unguessable_name(
    media_root: Path, avatar_png: bytes
) -> None:
    # When a valid output is stored
    stored = store_avatar_image(avatar_png)

    # Then it is saved as-is through default storage, under avatars/<32 hex>.png
    assert isinstance(stored, StoredImage)
    assert re.fullmatch(r"avatars/[0-9a-f]{32}\.png", stored.name), stored.name
    assert (media_root / stored.name).read_bytes() == avatar_png
    assert stored_files(media_root) == [media_root / stored.name]
    # And its facts are right
    assert (stored.width, stored.height) == (1024, 1024)
    assert stored.sha256 == hashlib.sha256(avatar_png).hexdigest()


def test_storing_the_same_image_twice_gives_two_names(media_root: Path, avatar_png: bytes) -> None:
    first = store_avatar_image(avatar_png)
    second = store_avatar_image(avatar_png)
    assert first.name != second.name
    assert first.sha256 == second.sha256
    assert len(stored_files(media_root)) == 2


@pytest.mark.parametrize(("fmt", "extension"), [("JPEG", "jpg"), ("WEBP", "webp")])
def test_jpeg_and_webp_outputs_keep_their_extension(
    media_root: Path, fmt: str, extension: str
) -> None:
    content = image_bytes(fmt=fmt)
    stored = store_avatar_image(content)
    assert re.fullmatch(rf"avatars/[0-9a-f]{{32}}\.{extension}", stored.name), stored.name
    assert (media_root / stored.name).read_bytes() == content


def test_a_transparent_png_is_stored(media_root: Path) -> None:
    stored = store_avatar_image(image_bytes(mode="RGBA"))
    assert (stored.width, stored.height) == (1024, 1024)


def truncated_png() -> bytes:
    content = image_bytes()
    return content[: len(content) // 2]


@pytest.mark.parametrize(
    "make",
    [
        lambda: image_bytes((512, 512)),
        lambda: image_bytes((1024, 1536)),
        lambda: image_bytes((1536, 1024)),
        lambda: image_bytes((1023, 1024)),
        lambda: b"<html><body>Not an image</body></html>",
        lambda: b"",
        truncated_png,
        lambda: image_bytes(fmt="GIF", mode="L"),
        lambda: image_bytes(fmt="BMP"),
    ],
    ids=[
        "512-square",
        "portrait",
        "landscape",
        "one-pixel-short",
        "text",
        "empty",
        "truncated-png",
        "gif",
        "bmp",
    ],
)
def test_an_unusable_output_is_refused_and_nothing_is_saved(media_root: Path, make) -> None:
    content = make()
    with pytest.raises(OutputRefused):
        store_avatar_image(content)
    assert stored_files(media_root) == []


def test_an_output_of_the_wrong_size_is_refused_without_decoding_its_pixels(
    media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a small file whose header declares a huge picture
    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, format="PNG")
    content = buffer.getvalue()
    assert len(content) < 1024 * 1024

    def forbidden(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)

    # When it is stored
    # Then the dimensions in its header are enough to refuse it
    with pytest.raises(OutputRefused, match="8000x8000"):
        store_avatar_image(content)
    assert stored_files(media_root) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_an_allowed_host_on_a_private_address_is_refused_at_connect_time(
    delivery, settings, host
) -> None:
    # Given a listed host that resolves to loopback, and private addresses not allowed
    settings.AVATAR_OUTPUT_ALLOWED_HOSTS = [host]
    settings.AVATAR_OUTPUT_ALLOW_PRIVATE_ADDRESSES = False
    delivery.replies["/output.png"] = Reply(200, b"an image")

    # When it is downloaded, it is refused, and the host never hears of it
    with pytest.raises(OutputRefused, match="non-public address"):
        download_output(delivery.url("/output.png", host=host))
    assert delivery.seen == []


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
    ],
)
def test_only_global_unicast_addresses_are_public(address, public) -> None:
    assert storage._is_public(address) is public


def test_a_public_host_is_connected_to_by_address_trying_each_in_turn(monkeypatch) -> None:
    resolved = [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700::1", 443, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: resolved)
    tried = []

    def connect(self, host, port, *args, **kwargs):
        tried.append(host)
        if ":" in host:
            raise httpcore.ConnectError("no IPv6 route")
        return "a stream"

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect)

    stream = storage._PublicAddressesOnly().connect_tcp("cdn.example", 443)

    assert (stream, tried) == ("a stream", ["2606:4700::1", "93.184.215.14"])
