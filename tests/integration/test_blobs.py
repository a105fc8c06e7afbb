"""Content-addressed blobs fetched between two real hosts over loopback links."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from nacl.signing import SigningKey

from modelmine.genesis import make_genesis
from modelmine.p2p.blobs import BlobError, BlobService, BlobStore, blob_id
from modelmine.p2p.host import Host
from modelmine.p2p.overlay import Overlay


@asynccontextmanager
async def two_hosts(tmp_path: Path) -> AsyncIterator[tuple[BlobService, BlobService]]:
    keys = [SigningKey.generate() for _ in range(2)]
    genesis = make_genesis([(bytes(keys[0].verify_key), "a")], chain_id="blob-net")
    services = []
    async with trio.open_nursery() as nursery:
        for i, key in enumerate(keys):
            host = Host(
                key, genesis.network_id, Overlay(key, genesis.chain_id, rng=random.Random(i))
            )
            await nursery.start(host.run)
            services.append(BlobService(host, BlobStore(tmp_path / f"blobs-{i}")))
        a, b = services
        b.host.overlay.add_known(a.host.node_id, a.host.address)
        yield a, b
        nursery.cancel_scope.cancel()


async def test_fetch_multi_chunk_blob_and_verify(tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 12345)
    with trio.fail_after(30):
        async with two_hosts(tmp_path) as (a, b):
            digest = a.store.put(data)
            path = await b.fetch(digest, [a.host.node_id], max_size=10 * 2**20)
            assert path.read_bytes() == data and blob_id(path.read_bytes()) == digest
            # Second fetch is local.
            assert await b.fetch(digest, [], max_size=10 * 2**20) == path


async def test_missing_blob_and_size_limit_are_clear_errors(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with two_hosts(tmp_path) as (a, b):
            with pytest.raises(BlobError, match=r"not available from any peer.*not here"):
                await b.fetch("ab" * 32, [a.host.node_id], max_size=1024)
            digest = a.store.put(b"x" * 5000)
            with pytest.raises(BlobError, match="limit is 1000"):
                await b.fetch(digest, [a.host.node_id], max_size=1000)
            with pytest.raises(BlobError, match="no provider"):
                await b.fetch(digest, [], max_size=10_000)


async def test_provider_sending_wrong_bytes_is_caught_and_banned(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with two_hosts(tmp_path) as (a, b):
            digest = blob_id(b"the real content")
            a.store.path(digest).write_bytes(b"something else entirely")  # a lying provider
            with pytest.raises(BlobError, match="do not hash"):
                await b.fetch(digest, [a.host.node_id], max_size=10_000)
            assert not b.store.has(digest)
            assert b.host.overlay.is_banned(a.host.node_id, trio.current_time())
