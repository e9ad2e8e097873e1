"""Fetching a finished avatar from Replicate's delivery host into our own storage.

Replicate deletes outputs an hour after a prediction, and its URLs must never reach users, so
the image is downloaded at once, checked, and saved through Django's storage API. The download
only goes to allow-listed hosts: an output URL is data from outside and must not be able to
make our worker fetch anything else (SSRF).
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import socket
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import lru_cache
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, UnidentifiedImageError

from avatars.models import avatar_upload_to

MAX_OUTPUT_BYTES = 25 * 1024 * 1024
MAX_REDIRECTS = 3
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# The whole download, however the host answers: one that trickles its bytes is cut off here.
DOWNLOAD_DEADLINE_SECONDS = 60
EXPECTED_SIZE = (1024, 1024)


class OutputRefused(Exception):
    """The output can not be used: a host off the list, too big, not an image, wrong size."""


class OutputUnreachable(Exception):
    """The output could not be fetched now (network, 5xx); trying again may help."""


class OutputGone(Exception):
    """The delivery host answered that the file does not exist (expired or removed)."""


@dataclass(frozen=True)
class StoredImage:
    name: str
    width: int
    height: int
    sha256: str


def is_allowed_output_url(url: str) -> bool:
    """HTTPS (or HTTP where allowed) to a host matching AVATAR_OUTPUT_ALLOWED_HOSTS.

    A listed host is trusted whatever address it resolves to; anything unlisted, including
    every IP literal, is refused.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a port)
    except ValueError:
        return False
    schemes = {"https", "http"} if settings.AVATAR_OUTPUT_ALLOW_HTTP else {"https"}
    if parts.scheme not in schemes or not parts.hostname or parts.username or parts.password:
        return False
    host = parts.hostname.lower().rstrip(".")
    return any(fnmatch(host, pattern.lower()) for pattern in settings.AVATAR_OUTPUT_ALLOWED_HOSTS)


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _PublicAddressesOnly(httpcore.SyncBackend):
    """Connects only to a public address, checked on the address actually connected to.

    The allow-list trusts names; this stops a listed name that resolves (or is rebound, between
    a check and the connection) to loopback, a private network, link-local (cloud metadata) or
    a reserved range. TLS still checks the certificate for the name.
    """

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(info[4][0] for info in found))
        if not addresses or not all(_is_public(address) for address in addresses):
            raise OutputRefused(f"output host {host} resolves to a non-public address")
        for address in addresses:  # in the resolver's order, as socket.create_connection does
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                failed = exc
        raise failed


class _DownloadTransport(httpx.HTTPTransport):
    """httpx's transport on a connection pool that refuses non-public addresses."""

    def __init__(self) -> None:
        super().__init__()
        # httpx offers no way to pass a network backend; its pool is rebuilt with ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), network_backend=_PublicAddressesOnly()
        )


@lru_cache(maxsize=2)
def _http_client(private_addresses: bool) -> httpx.Client:
    """One client per process: building one loads the CA bundle (~18 ms of CPU each time)."""
    transport = httpx.HTTPTransport() if private_addresses else _DownloadTransport()
    return httpx.Client(timeout=DOWNLOAD_TIMEOUT, follow_redirects=False, transport=transport)


def download_output(url: str) -> bytes:
    """The output's bytes, following at most a few redirects, each checked against the list."""
    deadline = time.monotonic() + DOWNLOAD_DEADLINE_SECONDS
    client = _http_client(settings.AVATAR_OUTPUT_ALLOW_PRIVATE_ADDRESSES)
    for _ in range(MAX_REDIRECTS + 1):
        if not is_allowed_output_url(url):
            raise OutputRefused(f"output URL not allowed: {url[:200]!r}")
        try:
            with client.stream("GET", url) as response:
                if response.is_redirect:
                    try:
                        url = urljoin(url, response.headers.get("location", ""))
                    except ValueError as exc:
                        raise OutputRefused("unreadable redirect location") from exc
                    continue
                if response.status_code in (404, 410):
                    raise OutputGone(f"output answered {response.status_code}")
                if response.status_code >= 500 or response.status_code == 429:
                    raise OutputUnreachable(f"output answered {response.status_code}")
                if response.status_code != 200:
                    raise OutputRefused(f"output answered {response.status_code}")
                return _read_capped(response, deadline)
        except httpx.TransportError as exc:
            raise OutputUnreachable(f"{type(exc).__name__}: {exc}") from exc
        except (httpx.InvalidURL, httpx.DecodingError) as exc:
            # The allow-list and httpx may read an odd URL differently: refuse, never guess.
            raise OutputRefused(f"{type(exc).__name__}: {exc}") from exc
    raise OutputRefused("too many redirects")


def _read_capped(response: httpx.Response, deadline: float) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_OUTPUT_BYTES:
        raise OutputRefused(f"output is {declared} bytes, more than {MAX_OUTPUT_BYTES}")
    buffer = io.BytesIO()
    for chunk in response.iter_bytes():
        buffer.write(chunk)
        if buffer.tell() > MAX_OUTPUT_BYTES:
            raise OutputRefused(f"output is more than {MAX_OUTPUT_BYTES} bytes")
        if time.monotonic() > deadline:
            # A server trickling bytes must not hold a worker past its time limit.
            raise OutputUnreachable(f"download took more than {DOWNLOAD_DEADLINE_SECONDS} s")
    return buffer.getvalue()


def store_avatar_image(content: bytes) -> StoredImage:
    """Check the bytes are a real 1024x1024 image, then save them under an unguessable name."""
    try:
        with Image.open(io.BytesIO(content), formats=["PNG", "JPEG", "WEBP"]) as image:
            size, image_format = image.size, image.format
            # Checked from the header, before any pixel is decoded.
            if size != EXPECTED_SIZE:
                raise OutputRefused(f"output is {size[0]}x{size[1]}, expected 1024x1024")
            image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise OutputRefused(f"output is not a readable image: {exc}") from exc
    extension = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}[image_format]
    name = default_storage.save(avatar_upload_to(None, f"avatar.{extension}"), ContentFile(content))
    return StoredImage(
        name=name, width=size[0], height=size[1], sha256=hashlib.sha256(content).hexdigest()
    )
