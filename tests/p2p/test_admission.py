"""The inbound connection gate (sans-IO): caps in all and per address, released exactly once."""

from __future__ import annotations

from modelmine.p2p.admission import ConnectionGate, InboundLimits, InboundSlot, address_key


def _admit(gate: ConnectionGate, host: str) -> InboundSlot:
    slot = gate.admit(host)
    assert isinstance(slot, InboundSlot), slot
    return slot


def test_half_open_connections_are_capped_per_address_and_freed_by_the_handshake() -> None:
    gate = ConnectionGate(InboundLimits(max_half_open_per_address=2))
    first, second = _admit(gate, "10.0.0.1"), _admit(gate, "10.0.0.1")
    refused = gate.admit("10.0.0.1")
    assert isinstance(refused, str) and "handshakes from 10.0.0.1" in refused
    _admit(gate, "10.0.0.2")  # another address is not affected
    first.authenticated()
    third = _admit(gate, "10.0.0.1")  # a finished handshake frees its slot
    assert gate.from_address("10.0.0.1") == (3, 2)
    assert (gate.inbound, gate.half_open, gate.refused) == (4, 3, 1)
    for slot in (first, second, third):
        slot.close()
        slot.close()  # idempotent
    assert gate.from_address("10.0.0.1") == (0, 0)
    assert (gate.inbound, gate.half_open) == (1, 1)


def test_connections_are_capped_per_address_and_in_all() -> None:
    gate = ConnectionGate(
        InboundLimits(
            max_inbound=6, max_half_open=3, max_inbound_per_address=2, max_half_open_per_address=2
        )
    )
    slots = [_admit(gate, "10.0.0.1") for _ in range(2)]
    for slot in slots:
        slot.authenticated()
    refused = gate.admit("10.0.0.1")
    assert isinstance(refused, str) and "connections from 10.0.0.1" in refused
    half = [_admit(gate, f"10.0.1.{n}") for n in range(3)]
    refused = gate.admit("10.0.2.1")
    assert isinstance(refused, str) and "handshakes under way" in refused
    half[0].authenticated()
    _admit(gate, "10.0.2.1")
    refused = gate.admit("10.0.2.2")
    assert isinstance(refused, str) and "6 connections already" in refused
    half[1].close()
    _admit(gate, "10.0.2.2")
    assert gate.inbound == 6 and gate.refused == 3


def test_closing_before_the_handshake_frees_both_counts() -> None:
    gate = ConnectionGate(InboundLimits(max_half_open=1))
    slot = _admit(gate, "10.0.0.1")
    assert isinstance(gate.admit("10.0.0.9"), str)
    slot.close()
    slot.authenticated()  # too late: nothing changes
    assert (gate.inbound, gate.half_open) == (0, 0)
    _admit(gate, "10.0.0.9")


def test_an_ipv6_host_counts_as_its_64_and_a_mapped_ipv4_as_itself() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("fe80::1%eth0") == "fe80::/64"
    gate = ConnectionGate(InboundLimits(max_half_open_per_address=1))
    _admit(gate, "2001:db8:1:2::1")
    assert isinstance(gate.admit("2001:db8:1:2::2"), str)  # same /64
    _admit(gate, "2001:db8:1:3::1")
