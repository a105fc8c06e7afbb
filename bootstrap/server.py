"""The bootstrap server: where nodes announce themselves and ask for peers.

It speaks the same authenticated, encrypted transport as nodes (bound to the network id of
its genesis), keeps no ledger and does no training. One exchange per connection: the node
sends ``{"t": "announce", "record": <signed peer record>}`` and receives
``{"t": "peers", "records": [...]}``, a random sample of the other live peers.
"""

from __future__ import annotations

import functools
import logging
from typing import Final

import trio
from nacl.signing import SigningKey

from bootstrap.registry import Registry
from modelmine import wire
from modelmine.genesis import Genesis
from modelmine.p2p import transport
from modelmine.signing import SignatureError

log = logging.getLogger(__name__)

EXCHANGE_TIMEOUT: Final = 10.0
EXPIRE_EVERY: Final = 10.0


class BootstrapServer:
    def __init__(self, identity: SigningKey, genesis: Genesis, *, ttl: float = 90.0) -> None:
        self.identity = identity
        self.genesis = genesis
        self.registry = Registry(genesis.chain_id, ttl=ttl)
        self.address = ""

    async def run(
        self, host: str, port: int, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(
                transport.serve_peers,
                identity=self.identity,
                network_id=self.genesis.network_id,
            )
            bound = await nursery.start(serve, self._exchange, host, port)
            self.address = f"ws://{host}:{bound}"
            nursery.start_soon(self._expire_loop)
            log.info("bootstrap server for %s listening on %s", self.genesis.chain_id, self.address)
            task_status.started(self.address)

    async def _expire_loop(self) -> None:
        while True:
            await trio.sleep(EXPIRE_EVERY)
            self.registry.expire(trio.current_time())

    async def _exchange(self, link: transport.PeerLink) -> None:
        try:
            with trio.fail_after(EXCHANGE_TIMEOUT):
                msg = wire.expect_map(wire.decode(await link.receive()), "announce")
                if wire.str_field(msg, "t", 16, "announce") != "announce":
                    raise wire.WireError("expected an announce message")
                raw: bytes = wire.field(msg, "record", bytes, "announce")
                self.registry.announce(raw, trio.current_time(), announcer=link.peer_id)
                peers = self.registry.sample(link.peer_id, trio.current_time())
                await link.send(wire.encode({"t": "peers", "records": peers}))
        except (SignatureError, wire.WireError) as exc:
            log.warning("bad announce from %s: %s", link.remote_address, exc)
            await link.aclose(transport.CLOSE_POLICY_VIOLATION, "bad announce")
        except (trio.TooSlowError, transport.LinkClosed) as exc:
            log.info("announce from %s ended early: %s", link.remote_address, exc or "timeout")
        finally:
            with trio.CancelScope(shield=True):
                await link.aclose()
