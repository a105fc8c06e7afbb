"""Admission of inbound connections (sans-IO): how many peers may hold connections open to a
listener at once, in all and per remote address, and how many of those may still be in the
handshake. ``transport.serve_peers`` asks a :class:`ConnectionGate` before it reads a byte of a
new connection and closes the ones over a cap at once.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["ConnectionGate", "InboundLimits", "InboundSlot", "address_key"]


@dataclass(frozen=True)
class InboundLimits:
    """Caps on the connections peers hold open to one listener at a time.

    "Half-open" connections have not finished the handshake: they cost a task, buffers and,
    once hs1 arrives, a key exchange, and prove nothing. An address is an IPv4 address or an
    IPv6 /64 (one host usually holds a whole /64)."""

    max_inbound: int = 256
    max_half_open: int = 64
    max_inbound_per_address: int = 32
    max_half_open_per_address: int = 8


def address_key(host: str) -> str:
    """What connections are counted by: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class InboundSlot:
    """One admitted connection; :meth:`authenticated` and :meth:`close` release its counts."""

    __slots__ = ("_gate", "address", "is_authenticated", "is_closed")

    def __init__(self, gate: ConnectionGate, address: str) -> None:
        self._gate = gate
        self.address = address
        self.is_authenticated = False
        self.is_closed = False

    def authenticated(self) -> None:
        if not self.is_authenticated and not self.is_closed:
            self.is_authenticated = True
            self._gate._release(self._gate._half_open, self.address)
            self._gate.half_open -= 1

    def close(self) -> None:
        if self.is_closed:
            return
        if not self.is_authenticated:
            self._gate._release(self._gate._half_open, self.address)
            self._gate.half_open -= 1
        self.is_closed = True
        self._gate._release(self._gate._inbound, self.address)
        self._gate.inbound -= 1


class ConnectionGate:
    """Counts a listener's inbound connections, in all and per address (sans-IO)."""

    def __init__(self, limits: InboundLimits | None = None) -> None:
        self.limits = limits or InboundLimits()
        self.inbound = 0
        self.half_open = 0
        self.refused = 0
        self._inbound: dict[str, int] = {}
        self._half_open: dict[str, int] = {}

    def admit(self, host: str) -> InboundSlot | str:
        """A slot for a new connection from ``host``, or the reason it is refused."""
        limits = self.limits
        address = address_key(host)
        reason = None
        if self.inbound >= limits.max_inbound:
            reason = f"{self.inbound} connections already (at most {limits.max_inbound})"
        elif self.half_open >= limits.max_half_open:
            reason = f"{self.half_open} handshakes under way (at most {limits.max_half_open})"
        elif self._inbound.get(address, 0) >= limits.max_inbound_per_address:
            reason = f"{limits.max_inbound_per_address} connections from {address} already"
        elif self._half_open.get(address, 0) >= limits.max_half_open_per_address:
            reason = f"{limits.max_half_open_per_address} handshakes from {address} under way"
        if reason is not None:
            self.refused += 1
            return reason
        self.inbound += 1
        self.half_open += 1
        self._inbound[address] = self._inbound.get(address, 0) + 1
        self._half_open[address] = self._half_open.get(address, 0) + 1
        return InboundSlot(self, address)

    def from_address(self, host: str) -> tuple[int, int]:
        """(connections, handshakes) now open from ``host``'s address."""
        address = address_key(host)
        return self._inbound.get(address, 0), self._half_open.get(address, 0)

    @staticmethod
    def _release(table: dict[str, int], address: str) -> None:
        left = table[address] - 1
        if left:
            table[address] = left
        else:
            del table[address]
