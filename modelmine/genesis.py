"""The genesis file: what defines a network.

``genesis.json`` names the chain, its validators with voting power, the credit grant a new
account receives and the consensus timing. The network id is SHA-256 of the canonical msgpack
bytes of its content, so whitespace or key order in the JSON file does not change it, but any
change of meaning does; peers of another network are refused during the handshake.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from modelmine import wire

GENESIS_FILE: Final = "genesis.json"
GENESIS_VERSION: Final = 1
CHAIN_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,47}$")
MAX_VALIDATORS: Final = 128


class GenesisError(ValueError):
    """A genesis file that is missing or invalid; the text names the field."""


@dataclass(frozen=True)
class Validator:
    node_id: bytes
    power: int
    name: str


@dataclass(frozen=True)
class ConsensusParams:
    """Seconds, all of them. Round r waits ``base + r * delta``."""

    timeout_propose: float = 3.0
    timeout_prevote: float = 1.0
    timeout_precommit: float = 1.0
    timeout_delta: float = 0.5
    idle_block_interval: float = 30.0
    max_block_records: int = 500


@dataclass(frozen=True)
class MembershipParams:
    heartbeat_interval: float = 5.0
    suspect_after: int = 3
    offline_after: int = 6


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    genesis_time: int
    validators: tuple[Validator, ...]
    initial_grant: int = 1000
    consensus: ConsensusParams = field(default_factory=ConsensusParams)
    membership: MembershipParams = field(default_factory=MembershipParams)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": GENESIS_VERSION,
            "chain_id": self.chain_id,
            "genesis_time": self.genesis_time,
            "validators": [
                {"node_id": v.node_id.hex(), "power": v.power, "name": v.name}
                for v in self.validators
            ],
            "initial_grant": self.initial_grant,
            "consensus": asdict(self.consensus),
            "membership": asdict(self.membership),
        }

    def canonical_bytes(self) -> bytes:
        return wire.encode(self.to_dict())

    @property
    def network_id(self) -> bytes:
        return wire.sha256(self.canonical_bytes())

    @property
    def total_power(self) -> int:
        return sum(v.power for v in self.validators)

    def validator(self, node_id: bytes) -> Validator | None:
        return next((v for v in self.validators if v.node_id == node_id), None)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Genesis:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise GenesisError(f"no genesis file at {path}") from None
        except (OSError, ValueError) as exc:
            raise GenesisError(f"genesis file {path} is not valid JSON: {exc}") from exc
        try:
            return cls.from_dict(doc)
        except GenesisError as exc:
            raise GenesisError(f"genesis file {path}: {exc}") from None

    @classmethod
    def from_dict(cls, doc: Any) -> Genesis:
        errors: list[str] = []
        if not isinstance(doc, dict):
            raise GenesisError("expected a JSON object")
        known = {
            "version",
            "chain_id",
            "genesis_time",
            "validators",
            "initial_grant",
            "consensus",
            "membership",
        }
        errors += [f"{k}: unknown field" for k in sorted(set(doc) - known)]
        if doc.get("version") != GENESIS_VERSION:
            errors.append(f"version: must be {GENESIS_VERSION}, got {doc.get('version')!r}")
        chain_id = doc.get("chain_id")
        if not isinstance(chain_id, str) or not CHAIN_ID.match(chain_id):
            errors.append(
                f"chain_id: must be 3-48 lowercase letters, digits or '-', got {chain_id!r}"
            )
        gtime = doc.get("genesis_time")
        if not isinstance(gtime, int) or isinstance(gtime, bool) or gtime < 0:
            errors.append(f"genesis_time: must be a non-negative integer, got {gtime!r}")
        grant = doc.get("initial_grant", 1000)
        if not isinstance(grant, int) or isinstance(grant, bool) or not 0 <= grant <= 10**9:
            errors.append(f"initial_grant: must be 0..1000000000, got {grant!r}")
        validators: list[Validator] = []
        raw_validators = doc.get("validators")
        if not isinstance(raw_validators, list) or not 1 <= len(raw_validators) <= MAX_VALIDATORS:
            errors.append(f"validators: must be a list of 1..{MAX_VALIDATORS} entries")
            raw_validators = []
        for i, v in enumerate(raw_validators):
            where = f"validators[{i}]"
            if not isinstance(v, dict):
                errors.append(f"{where}: must be an object")
                continue
            try:
                node_id = bytes.fromhex(v.get("node_id", ""))
            except (TypeError, ValueError):
                node_id = b""
            if len(node_id) != 32:
                errors.append(f"{where}.node_id: must be 64 hex digits")
            power = v.get("power")
            if not isinstance(power, int) or isinstance(power, bool) or not 1 <= power <= 10**6:
                errors.append(f"{where}.power: must be 1..1000000, got {power!r}")
                power = 1
            name = v.get("name", "")
            if not isinstance(name, str) or len(name) > 64:
                errors.append(f"{where}.name: must be a string of at most 64 characters")
                name = ""
            validators.append(Validator(node_id, power, name))
        if len({v.node_id for v in validators}) != len(validators):
            errors.append("validators: duplicate node_id")
        consensus = _params(ConsensusParams, doc.get("consensus", {}), "consensus", errors)
        membership = _params(MembershipParams, doc.get("membership", {}), "membership", errors)
        if errors:
            raise GenesisError("; ".join(errors))
        assert isinstance(chain_id, str) and isinstance(gtime, int) and isinstance(grant, int)
        return cls(chain_id, gtime, tuple(validators), grant, consensus, membership)


def _params(kind: type[Any], raw: Any, where: str, errors: list[str]) -> Any:
    defaults = kind()
    if not isinstance(raw, dict):
        errors.append(f"{where}: must be an object")
        return defaults
    values = asdict(defaults)
    for key, value in raw.items():
        if key not in values:
            errors.append(f"{where}.{key}: unknown field")
            continue
        expected = type(values[key])
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if expected is int:
            ok = ok and isinstance(value, int)
        if not ok or not 0 < value <= 3600:
            errors.append(f"{where}.{key}: must be a number in (0, 3600], got {value!r}")
            continue
        values[key] = expected(value)
    return kind(**values)


def new_chain_id(prefix: str = "modelmine") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def make_genesis(
    validators: list[tuple[bytes, str]],
    *,
    chain_id: str | None = None,
    initial_grant: int = 1000,
    power: int = 10,
) -> Genesis:
    return Genesis(
        chain_id=chain_id or new_chain_id(),
        genesis_time=int(time.time()),
        validators=tuple(Validator(node_id, power, name) for node_id, name in validators),
        initial_grant=initial_grant,
    )
