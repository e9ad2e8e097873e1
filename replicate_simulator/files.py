"""Uploaded files (``/v1/files``): records, JSON shape and signed download URLs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from .clock import Clock
from .ids import isoformat, new_id

FILE_OWNER = "simulator"


@dataclass
class StoredFile:
    """A file uploaded through the Files API."""

    id: str
    name: str
    content_type: str
    data: bytes
    metadata: dict[str, Any]
    created_at: float
    expires_at: float
    deleted_at: float | None = None
    sha256: str = field(init=False)
    md5: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.md5 = hashlib.md5(self.data, usedforsecurity=False).hexdigest()

    def is_available(self, now: float) -> bool:
        return self.deleted_at is None and now < self.expires_at

    def to_json(self, base_url: str) -> dict[str, Any]:
        """The file object as ``GET /v1/files/{id}`` returns it."""
        return {
            "id": self.id,
            "name": self.name,
            "content_type": self.content_type,
            "size": len(self.data),
            "etag": self.md5,
            "checksums": {"sha256": self.sha256, "md5": self.md5},
            "metadata": self.metadata,
            "created_at": isoformat(self.created_at),
            "expires_at": isoformat(self.expires_at),
            "urls": {"get": f"{base_url}/v1/files/{self.id}"},
        }

    def debug_view(self, base_url: str, signing_key: bytes) -> dict[str, Any]:
        view = self.to_json(base_url)
        view["deleted_at"] = isoformat(self.deleted_at) if self.deleted_at else None
        view["download_url"] = download_url(base_url, self, signing_key)
        return view


def _signature(signing_key: bytes, file_id: str, expiry: int) -> str:
    message = f"{FILE_OWNER} {file_id} {expiry}".encode()
    return base64.b64encode(hmac.new(signing_key, message, hashlib.sha256).digest()).decode()


def download_url(base_url: str, stored: StoredFile, signing_key: bytes) -> str:
    """A signed ``/v1/files/{id}/download`` URL, as Replicate's Files API issues them."""
    expiry = int(stored.expires_at)
    query = urlencode(
        {
            "expiry": expiry,
            "owner": FILE_OWNER,
            "signature": _signature(signing_key, stored.id, expiry),
        }
    )
    return f"{base_url}/v1/files/{stored.id}/download?{query}"


def verify_download(
    signing_key: bytes, file_id: str, query: dict[str, list[str]], now: float
) -> bool:
    """Whether a download URL's owner, expiry and signature are valid now."""
    try:
        expiry = int(query["expiry"][0])
        owner = query["owner"][0]
        signature = query["signature"][0]
    except (KeyError, IndexError, ValueError):
        return False
    if owner != FILE_OWNER or now > expiry:
        return False
    return hmac.compare_digest(signature, _signature(signing_key, file_id, expiry))


class FileStore:
    """Uploaded files in memory; deleted and expired files answer as missing."""

    def __init__(
        self, clock: Clock, base_url: Callable[[], str], retention: Callable[[], float]
    ) -> None:
        self._clock = clock
        self._base_url = base_url
        self._retention = retention
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self._deletions: list[dict[str, str]] = []
        self._signing_key = secrets.token_bytes(32)

    def create(
        self, data: bytes, name: str, content_type: str, metadata: dict[str, Any]
    ) -> dict[str, Any]:
        now = self._clock.time()
        stored = StoredFile(
            id=new_id(),
            name=name,
            content_type=content_type,
            data=data,
            metadata=metadata,
            created_at=now,
            expires_at=now + self._retention(),
        )
        with self._lock:
            self._files[stored.id] = stored
        return stored.to_json(self._base_url())

    def get(self, file_id: str) -> dict[str, Any] | None:
        stored = self._available(file_id)
        return stored.to_json(self._base_url()) if stored else None

    def content(self, file_id: str) -> bytes | None:
        """The bytes of a live file (how predictions read their own file URLs)."""
        stored = self._available(file_id)
        return stored.data if stored else None

    def list(self) -> dict[str, Any]:
        now = self._clock.time()
        with self._lock:
            live = [f for f in self._files.values() if f.is_available(now)]
        live.sort(key=lambda f: f.created_at, reverse=True)
        return {
            "next": None,
            "previous": None,
            "results": [f.to_json(self._base_url()) for f in live],
        }

    def delete(self, file_id: str) -> bool:
        """Delete a live file and record the deletion (tests assert cleanup happened)."""
        now = self._clock.time()
        with self._lock:
            stored = self._files.get(file_id)
            if stored is None or not stored.is_available(now):
                return False
            stored.deleted_at = now
            self._deletions.append(
                {"file_id": file_id, "name": stored.name, "deleted_at": isoformat(now)}
            )
            return True

    def download(self, file_id: str, query: dict[str, list[str]]) -> StoredFile | None:
        """The file behind a signed download URL, if the signature is valid and unexpired."""
        stored = self._available(file_id)
        if stored is None or not verify_download(
            self._signing_key, file_id, query, self._clock.time()
        ):
            return None
        return stored

    def debug(self) -> dict[str, Any]:
        """Every file ever uploaded (with download URLs) and every deletion."""
        base_url = self._base_url()
        with self._lock:
            return {
                "files": [f.debug_view(base_url, self._signing_key) for f in self._files.values()],
                "deletions": list(self._deletions),
            }

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self._deletions.clear()

    def _available(self, file_id: str) -> StoredFile | None:
        now = self._clock.time()
        with self._lock:
            stored = self._files.get(file_id)
        return stored if stored is not None and stored.is_available(now) else None
