"""Encrypted frames after the handshake: ChaCha20-Poly1305 with implicit counter nonces.

Each direction of a link has its own 32-byte key and its own 64-bit frame counter. The sender
seals frame n with nonce ``00000000 || n`` (n as 8 little-endian bytes) and increments n; the
receiver opens each frame with exactly the next counter it expects. The counter never goes on
the wire, so a frame is ``ciphertext || 16-byte tag`` and nothing more, and a frame that was
replayed, reordered, dropped before it or tampered with fails to open.

An opener that failed once stays failed: the link must be closed, never resynchronised.
"""

from __future__ import annotations

import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

KEY_SIZE: Final = 32
TAG_SIZE: Final = 16
MAX_PLAINTEXT: Final = 4 * 1024 * 1024
MAX_FRAME: Final = MAX_PLAINTEXT + TAG_SIZE
# 2**64 - 1 is reserved (as in Noise) so a counter can never wrap around to a used nonce.
COUNTER_LIMIT: Final = 2**64 - 1

# 4 zero bytes, then the counter as an unsigned 64-bit little-endian integer.
_nonce = struct.Struct("<4xQ").pack


class ChannelError(Exception):
    """A frame that cannot be sealed or opened. The link it belongs to must be closed."""


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ChannelError(f"channel key must be {KEY_SIZE} bytes")


def _check_counter(counter: int) -> None:
    if not 0 <= counter <= COUNTER_LIMIT:
        raise ChannelError(f"frame counter must be 0..{COUNTER_LIMIT}, got {counter}")


class FrameSealer:
    """Encrypts the outgoing frames of one direction, in order."""

    __slots__ = ("_aead", "_counter")

    def __init__(self, key: bytes, *, counter: int = 0) -> None:
        _check_key(key)
        _check_counter(counter)
        self._aead = ChaCha20Poly1305(key)
        self._counter = counter

    @property
    def counter(self) -> int:
        """The counter the next sealed frame will use (= frames sealed so far)."""
        return self._counter

    def seal(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """``plaintext`` encrypted under the next counter. Raises :class:`ChannelError`."""
        if len(plaintext) > MAX_PLAINTEXT:
            raise ChannelError(
                f"message of {len(plaintext)} bytes exceeds the limit of {MAX_PLAINTEXT}"
            )
        counter = self._counter
        if counter >= COUNTER_LIMIT:
            raise ChannelError("send counter exhausted: the link must be re-established")
        self._counter = counter + 1
        return self._aead.encrypt(_nonce(counter), plaintext, None)


class FrameOpener:
    """Decrypts the incoming frames of one direction; each must carry the next counter."""

    __slots__ = ("_aead", "_counter", "_failed")

    def __init__(self, key: bytes, *, counter: int = 0) -> None:
        _check_key(key)
        _check_counter(counter)
        self._aead = ChaCha20Poly1305(key)
        self._counter = counter
        self._failed = False

    @property
    def counter(self) -> int:
        """The counter the next frame must carry (= frames opened so far)."""
        return self._counter

    def open(self, frame: bytes | bytearray | memoryview) -> bytes:
        """The plaintext of the next frame. Raises :class:`ChannelError`, then always fails."""
        if self._failed:
            raise ChannelError("channel already failed; no further frames are accepted")
        counter = self._counter
        if counter >= COUNTER_LIMIT:
            self._failed = True
            raise ChannelError("receive counter exhausted: the link must be re-established")
        size = len(frame)
        if size < TAG_SIZE:
            self._failed = True
            raise ChannelError(f"frame {counter} of {size} bytes is shorter than the tag")
        if size > MAX_FRAME:
            self._failed = True
            raise ChannelError(f"frame {counter} of {size} bytes exceeds the limit of {MAX_FRAME}")
        try:
            plaintext = self._aead.decrypt(_nonce(counter), frame, None)
        except InvalidTag:
            self._failed = True
            raise ChannelError(
                f"frame {counter} failed to open (tampered, replayed, reordered or dropped)"
            ) from None
        self._counter = counter + 1
        return plaintext
