"""Content-addressed files (datasets, checkpoints, trained models) shared between peers.

A blob is named by the SHA-256 of its bytes and stored at ``<data-dir>/blobs/<hex>``. Peers
fetch blobs in chunks over their existing links (``blob.get`` requests), verify the hash of the
whole before keeping it, and never accept more than ``max_size`` bytes. A provider that sends
bytes that do not hash to the name loses score.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import trio

from modelmine import wire
from modelmine.p2p.host import Host, RequestError, RequestFailed

log = logging.getLogger(__name__)

CHUNK: Final = 1024 * 1024
MAX_BLOB: Final = 512 * 1024 * 1024
_HEX = re.compile(r"^[0-9a-f]{64}$")


class BlobError(Exception):
    """A blob that cannot be had: nobody has it, it is too big, or it does not match its hash."""


def blob_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, root: Path, *, max_size: int = MAX_BLOB) -> None:
        self.root = root
        self.max_size = max_size
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not _HEX.match(digest):
            raise BlobError(f"not a blob id: {digest!r}")
        return self.root / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def put(self, data: bytes) -> str:
        if len(data) > self.max_size:
            raise BlobError(f"blob of {len(data)} bytes exceeds the limit of {self.max_size}")
        digest = blob_id(data)
        if not self.has(digest):
            self._write(digest, [data])
        return digest

    def put_file(self, source: Path) -> str:
        """Copy a file in, hashing as it streams. Returns the blob id."""
        size = source.stat().st_size
        if size > self.max_size:
            raise BlobError(f"{source} is {size} bytes; the limit is {self.max_size}")
        h = hashlib.sha256()
        tmp = self.root / f".in-{os.getpid()}-{id(source)}"
        with source.open("rb") as src, tmp.open("wb") as dst:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                dst.write(chunk)
        digest = h.hexdigest()
        os.replace(tmp, self.path(digest))
        return digest

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobError(f"blob {digest[:12]} is not here") from None

    def read_chunk(self, digest: str, offset: int, length: int) -> tuple[bytes, int]:
        path = self.path(digest)
        try:
            with path.open("rb") as f:
                total = os.fstat(f.fileno()).st_size
                f.seek(offset)
                return f.read(length), total
        except FileNotFoundError:
            raise BlobError(f"blob {digest[:12]} is not here") from None

    def _write(self, digest: str, chunks: Sequence[bytes]) -> None:
        tmp = self.root / f".in-{digest}-{os.getpid()}"
        with tmp.open("wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path(digest))


class BlobService:
    """Serves this node's blobs to peers and fetches blobs it lacks from them."""

    def __init__(self, host: Host, store: BlobStore) -> None:
        self.host = host
        self.store = store
        host.register_handler("blob.get", self._serve_get)
        host.register_handler("blob.has", self._serve_has)
        self._fetching: dict[str, trio.Event] = {}

    async def _serve_has(self, peer: bytes, body: dict[str, Any]) -> dict[str, Any]:
        digest = wire.str_field(body, "id", 64, "blob.has")
        try:
            present = self.store.has(digest)
        except BlobError as exc:
            raise RequestError(str(exc)) from None
        return {"has": present, "size": self.store.size(digest) if present else 0}

    async def _serve_get(self, peer: bytes, body: dict[str, Any]) -> dict[str, Any]:
        digest = wire.str_field(body, "id", 64, "blob.get")
        offset = wire.int_field(body, "offset", 0, MAX_BLOB, "blob.get")
        length = wire.int_field(body, "length", 1, CHUNK, "blob.get")
        try:
            data, total = await trio.to_thread.run_sync(
                self.store.read_chunk, digest, offset, length
            )
        except BlobError as exc:
            raise RequestError(str(exc)) from None
        return {"data": data, "total": total}

    async def fetch(self, digest: str, providers: Sequence[bytes], *, max_size: int) -> Path:
        """The blob's local path, fetching it from ``providers`` (in order) if needed."""
        if self.store.has(digest):
            return self.store.path(digest)
        running = self._fetching.get(digest)
        if running is not None:  # someone here is already fetching it: share the result
            await running.wait()
            if self.store.has(digest):
                return self.store.path(digest)
            raise BlobError(f"blob {digest[:12]} could not be fetched")
        self._fetching[digest] = trio.Event()
        reasons: list[str] = []
        try:
            for peer in providers:
                if peer == self.host.node_id:
                    continue
                try:
                    data = await self._fetch_from(peer, digest, max_size)
                except (RequestFailed, BlobError, wire.WireError) as exc:
                    reasons.append(f"{peer.hex()[:8]}: {exc}")
                    continue
                await trio.to_thread.run_sync(self.store._write, digest, data)
                return self.store.path(digest)
        finally:
            self._fetching.pop(digest).set()
        why = "; ".join(reasons) or "no provider known"
        raise BlobError(f"blob {digest[:12]} is not available from any peer ({why})")

    async def _request_chunk(self, peer: bytes, digest: str, offset: int) -> dict[str, Any]:
        """One chunk, asked up to 3 times: a request in flight is lost when its link is
        replaced (both sides dialed at once) or drops, and the next try goes over the new one."""
        body = {"id": digest, "offset": offset, "length": CHUNK}
        for attempt in range(3):
            try:
                return await self.host.request(peer, "blob.get", body, within=10.0)
            except RequestFailed as exc:
                if attempt == 2 or not self.host.is_linked(peer):
                    raise  # unreachable, or it answered with an error: final
                if "answered" in str(exc):
                    raise
        raise AssertionError("unreachable")

    async def _fetch_from(self, peer: bytes, digest: str, max_size: int) -> list[bytes]:
        chunks: list[bytes] = []
        offset, total = 0, None
        h = hashlib.sha256()
        while total is None or offset < total:
            reply = await self._request_chunk(peer, digest, offset)
            data: bytes = wire.field(reply, "data", bytes, "blob chunk")
            size = wire.int_field(reply, "total", 0, MAX_BLOB, "blob chunk")
            if total is None:
                if size > max_size:
                    raise BlobError(f"blob is {size} bytes; the limit is {max_size}")
                total = size
            if size != total or (not data and offset < total) or offset + len(data) > total:
                raise BlobError("inconsistent chunk sizes")
            chunks.append(data)
            h.update(data)
            offset += len(data)
        if h.hexdigest() != digest:
            self.host._apply(
                self.host.overlay.penalize(
                    peer,
                    100,
                    f"sent blob bytes that do not match {digest[:12]}",
                    trio.current_time(),
                )
            )
            raise BlobError(f"{peer.hex()[:8]} sent bytes that do not hash to {digest[:12]}")
        return chunks
