import json
import stat
from pathlib import Path

import pytest

from modelmine.genesis import Genesis, GenesisError, make_genesis
from modelmine.identity import (
    Keystore,
    KeystoreError,
    NoSuchAccount,
    WrongPassword,
    load_or_create_node_key,
)


def test_node_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    key = load_or_create_node_key(tmp_path)
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600
    assert bytes(load_or_create_node_key(tmp_path)) == bytes(key)


def test_keystore_create_unlock_and_errors(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    info = store.create("alice", "correct horse")
    assert stat.S_IMODE((tmp_path / "accounts" / "alice.json").stat().st_mode) == 0o600
    assert bytes(store.unlock("alice", "correct horse").verify_key) == info.account_id
    with pytest.raises(WrongPassword, match="wrong password for account 'alice'"):
        store.unlock("alice", "wrong horse!")
    with pytest.raises(NoSuchAccount, match="no account named 'bob' \\(accounts: alice\\)"):
        store.unlock("bob", "whatever1")
    with pytest.raises(KeystoreError, match="already exists"):
        store.create("alice", "another pw")
    with pytest.raises(KeystoreError, match="too short"):
        store.create("carol", "short")
    with pytest.raises(KeystoreError, match="invalid account name"):
        store.create("../evil", "long enough")


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: "not json",
        lambda d: json.dumps({**d, "sealed": d["sealed"][:-4]}),
        lambda d: json.dumps({**d, "kdf": {"name": "scrypt"}}),
        lambda d: json.dumps({**d, "version": 99}),
        lambda d: json.dumps({**d, "account_id": "00" * 32}),
    ],
)
def test_corrupt_keystore_is_a_clear_error(tmp_path: Path, corrupt: object) -> None:
    store = Keystore(tmp_path)
    store.create("alice", "correct horse")
    path = tmp_path / "accounts" / "alice.json"
    path.write_text(corrupt(json.loads(path.read_text())))  # type: ignore[operator]
    with pytest.raises(KeystoreError, match="corrupt"):
        store.unlock("alice", "correct horse")


def test_network_id_depends_on_meaning_not_formatting(tmp_path: Path) -> None:
    genesis = make_genesis([(b"\x01" * 32, "a"), (b"\x02" * 32, "b")], chain_id="net-one")
    genesis.save(tmp_path / "g.json")
    doc = json.loads((tmp_path / "g.json").read_text())
    (tmp_path / "compact.json").write_text(json.dumps(doc, separators=(",", ":")))
    assert Genesis.load(tmp_path / "compact.json").network_id == genesis.network_id
    doc["initial_grant"] = 5
    assert Genesis.from_dict(doc).network_id != genesis.network_id


def test_genesis_errors_name_every_bad_field() -> None:
    with pytest.raises(GenesisError) as err:
        Genesis.from_dict(
            {
                "version": 1,
                "chain_id": "X",
                "genesis_time": -1,
                "validators": [{"node_id": "zz", "power": 0}],
                "consensus": {"timeout_propose": -1, "bogus": 1},
                "extra": 1,
            }
        )
    text = str(err.value)
    for field in (
        "chain_id",
        "genesis_time",
        "validators[0].node_id",
        "validators[0].power",
        "consensus.timeout_propose",
        "consensus.bogus",
        "extra",
    ):
        assert field in text
