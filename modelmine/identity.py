"""Keys: the node's identity key and the encrypted account keystore.

A node id or account id is a 32-byte Ed25519 public key, shown as hex (short form: the first
8 hex digits). The node key is a raw seed file with mode 0600, created on first start.
Accounts live in ``<data-dir>/accounts/<name>.json``: the seed encrypted with XSalsa20-Poly1305
(SecretBox) under a key derived from the password with Argon2id.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils
from nacl.signing import SigningKey

NODE_KEY_FILE: Final = "node.key"
ACCOUNTS_DIR: Final = "accounts"
KEYSTORE_VERSION: Final = 1
ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
MIN_PASSWORD_LEN: Final = 8


class IdentityError(Exception):
    """Base for user-facing key and keystore errors (one line, no traceback)."""


class KeystoreError(IdentityError):
    pass


class WrongPassword(KeystoreError):
    pass


class NoSuchAccount(KeystoreError):
    pass


def short_id(key: bytes) -> str:
    return key.hex()[:8]


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_or_create_node_key(data_dir: Path) -> SigningKey:
    """The node's identity key; created (mode 0600) on first start."""
    path = data_dir / NODE_KEY_FILE
    if path.exists():
        return load_node_key(path)
    key = SigningKey.generate()
    write_private(path, bytes(key).hex().encode() + b"\n")
    return key


def load_node_key(path: Path) -> SigningKey:
    try:
        text = path.read_text().strip()
        seed = bytes.fromhex(text)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise IdentityError(f"node key {path} is unreadable or corrupt: {exc}") from exc
    if len(seed) != 32:
        raise IdentityError(f"node key {path} is corrupt: expected 32 bytes, got {len(seed)}")
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return SigningKey(seed)


def save_node_key(data_dir: Path, key: SigningKey) -> None:
    write_private(data_dir / NODE_KEY_FILE, bytes(key).hex().encode() + b"\n")


@dataclass(frozen=True)
class AccountInfo:
    name: str
    account_id: bytes

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "account_id": self.account_id.hex()}


class Keystore:
    """Encrypted account keys in one directory. Thread-unsafe by design: one CLI call at a time."""

    def __init__(self, data_dir: Path, *, opslimit: int | None = None, memlimit: int | None = None):
        self.root = data_dir / ACCOUNTS_DIR
        self._opslimit = opslimit or nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
        self._memlimit = memlimit or nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE

    def _path(self, name: str) -> Path:
        if not ACCOUNT_NAME.match(name):
            raise KeystoreError(
                f"invalid account name {name!r}: use 1-32 letters, digits, '.', '_' or '-'"
            )
        return self.root / f"{name}.json"

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json"))

    def list(self) -> list[AccountInfo]:
        return [self.info(name) for name in self.names()]

    def info(self, name: str) -> AccountInfo:
        doc = self._read(name)
        return AccountInfo(name, _hex_field(doc, "account_id", 32, self._path(name)))

    def create(self, name: str, password: str) -> AccountInfo:
        path = self._path(name)
        if path.exists():
            raise KeystoreError(f"an account named {name!r} already exists")
        if len(password) < MIN_PASSWORD_LEN:
            raise KeystoreError(f"password too short: use at least {MIN_PASSWORD_LEN} characters")
        key = SigningKey.generate()
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        box = nacl.secret.SecretBox(self._derive(password, salt, self._opslimit, self._memlimit))
        sealed = box.encrypt(bytes(key))
        doc = {
            "version": KEYSTORE_VERSION,
            "name": name,
            "account_id": bytes(key.verify_key).hex(),
            "kdf": {
                "name": "argon2id",
                "salt": salt.hex(),
                "opslimit": self._opslimit,
                "memlimit": self._memlimit,
            },
            "cipher": "xsalsa20-poly1305",
            "sealed": sealed.hex(),
        }
        write_private(path, json.dumps(doc, indent=2).encode() + b"\n")
        return AccountInfo(name, bytes(key.verify_key))

    def unlock(self, name: str, password: str) -> SigningKey:
        path = self._path(name)
        doc = self._read(name)
        kdf = doc.get("kdf")
        if not isinstance(kdf, dict) or kdf.get("name") != "argon2id":
            raise KeystoreError(f"keystore file {path} is corrupt: bad kdf section")
        salt = _hex_field(kdf, "salt", nacl.pwhash.argon2id.SALTBYTES, path)
        opslimit, memlimit = kdf.get("opslimit"), kdf.get("memlimit")
        if not isinstance(opslimit, int) or not isinstance(memlimit, int):
            raise KeystoreError(f"keystore file {path} is corrupt: bad kdf limits")
        if not (1 <= opslimit <= 64 and 8192 <= memlimit <= 4 << 30):
            raise KeystoreError(f"keystore file {path} is corrupt: kdf limits out of range")
        sealed_hex = doc.get("sealed")
        try:
            sealed = bytes.fromhex(sealed_hex) if isinstance(sealed_hex, str) else b""
        except ValueError:
            sealed = b""
        if len(sealed) != 32 + nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES:
            raise KeystoreError(f"keystore file {path} is corrupt: bad sealed key")
        box = nacl.secret.SecretBox(self._derive(password, salt, opslimit, memlimit))
        try:
            seed = box.decrypt(sealed)
        except nacl.exceptions.CryptoError:
            raise WrongPassword(f"wrong password for account {name!r}") from None
        key = SigningKey(seed)
        if bytes(key.verify_key).hex() != doc.get("account_id"):
            raise KeystoreError(f"keystore file {path} is corrupt: key does not match its id")
        return key

    def _read(self, name: str) -> dict[str, Any]:
        path = self._path(name)
        if not path.exists():
            have = ", ".join(self.names()) or "none"
            raise NoSuchAccount(f"no account named {name!r} (accounts: {have})")
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise KeystoreError(f"keystore file {path} is corrupt: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("version") != KEYSTORE_VERSION:
            raise KeystoreError(f"keystore file {path} is corrupt or of an unknown version")
        return doc

    @staticmethod
    def _derive(password: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
        key: bytes = nacl.pwhash.argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE,
            password.encode(),
            salt,
            opslimit=opslimit,
            memlimit=memlimit,
        )
        return key


def _hex_field(doc: dict[str, Any], name: str, size: int, path: Path) -> bytes:
    value = doc.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise KeystoreError(f"keystore file {path} is corrupt: bad {name}")
    return raw
