"""Fetching input images: data URIs, the simulator's own file URLs, and plain http(s) URLs."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from urllib.parse import unquote_to_bytes, urlsplit

import httpx

_OWN_FILE_PATH = re.compile(r"^/v1/files/(?P<id>[A-Za-z0-9_-]+)(?:/download)?/?$")
_OWN_OUTPUT_PATH = re.compile(r"^/delivery/(?P<id>[A-Za-z0-9_-]+)/(?P<name>[^/]+)$")
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024


class InputError(ValueError):
    """An input file could not be read; the prediction fails with this message."""


class InputResolver:
    """Turns an ``input_images`` entry into bytes.

    URLs on the simulator's own host are resolved from its store, as Replicate
    resolves its own ``api.replicate.com/v1/files/...`` URLs without HTTP.
    """

    def __init__(
        self,
        own_netlocs: Callable[[], set[str]],
        uploaded_file: Callable[[str], bytes | None],
        output_file: Callable[[str, str], bytes | None],
        timeout: float = 10.0,
    ) -> None:
        self._own_netlocs = own_netlocs
        self._uploaded_file = uploaded_file
        self._output_file = output_file
        self._timeout = timeout

    def read(self, reference: str) -> bytes:
        if reference.startswith("data:"):
            return decode_data_uri(reference)
        parts = urlsplit(reference)
        if parts.scheme not in ("http", "https"):
            raise InputError(f"Unsupported URL scheme for input file: {reference[:80]}")
        if parts.netloc.lower() in self._own_netlocs():
            return self._read_own(parts.path, reference)
        return self._download(reference)

    def _read_own(self, path: str, reference: str) -> bytes:
        if match := _OWN_FILE_PATH.match(path):
            data = self._uploaded_file(match["id"])
        elif match := _OWN_OUTPUT_PATH.match(path):
            data = self._output_file(match["id"], match["name"])
        else:
            data = None
        if data is None:
            raise InputError(f"Failed to download input file {reference}: 404 Not Found")
        return data

    def _download(self, url: str) -> bytes:
        try:
            with httpx.stream("GET", url, timeout=self._timeout, follow_redirects=True) as resp:
                if resp.status_code != 200:
                    raise InputError(
                        f"Failed to download input file {url}: HTTP {resp.status_code}"
                    )
                chunks, size = [], 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise InputError(f"Input file {url} is too large")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise InputError(f"Failed to download input file {url}: {exc}") from exc


def decode_data_uri(uri: str) -> bytes:
    """Decode ``data:[<mediatype>][;base64],<data>``."""
    header, sep, payload = uri.partition(",")
    if not sep:
        raise InputError("Malformed data URI")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"Malformed base64 in data URI: {exc}") from exc
    return unquote_to_bytes(payload)


def netloc_aliases(base_url: str) -> set[str]:
    """The netloc of ``base_url`` plus its localhost/127.0.0.1 twin."""
    netloc = urlsplit(base_url).netloc.lower()
    host, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
    names = {netloc}
    twins = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}
    if host in twins:
        names.add(f"{twins[host]}:{port}" if port else twins[host])
    return names
