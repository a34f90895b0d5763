"""Streams sealed in chunks with AES-256-GCM: written and read a chunk at a time, so that
neither side holds the whole stream (backup archives, index snapshots).

A chunk's nonce is a random prefix, its number and a final flag, and the stream's header is
associated data: chunks cannot be changed, reordered, dropped, cut off, appended to or moved to
another stream without the read failing (the STREAM construction of Hoang, Reyhanitabar,
Rogaway and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance").

    header = magic + key id (8 bytes) + nonce prefix (7 bytes)
    chunk  = length (4 bytes, big endian) + AES-GCM(key, prefix + number (4) + final (1), plain, header)
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TAG = 16  # bytes AES-GCM adds to each chunk


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class SealError(ValueError):
    """The stream cannot be opened: another key, damaged, tampered with or cut off."""


class Sealer:
    """Seals one stream: ``header`` first, then ``seal(chunk)`` for each chunk, the last one final."""

    def __init__(self, key: bytes, magic: bytes, key_id: bytes) -> None:
        self._aead = AESGCM(key)
        self._prefix = os.urandom(7)
        self.header = magic + key_id + self._prefix
        self._number = 0

    def seal(self, plain: bytes, final: bool = False) -> bytes:
        nonce = self._prefix + struct.pack(">IB", self._number, int(final))
        self._number += 1
        sealed = self._aead.encrypt(nonce, plain, self.header)
        return struct.pack(">I", len(sealed)) + sealed


def open_stream(source: Readable, magic: bytes, key_for: Callable[[bytes], bytes | None], max_chunk: int,
                what: str = "stream") -> Iterator[bytes]:
    """The plain chunks of a sealed stream, checked, in order; ``key_for`` maps the header's key
    id to the key (None: not a key held here). Raises SealError, naming ``what``, on any fault."""
    header = source.read(len(magic) + 15)
    if len(header) != len(magic) + 15 or not header.startswith(magic):
        raise SealError(f"this is not a {what}")
    key = key_for(header[len(magic):len(magic) + 8])
    if key is None:
        raise SealError(f"the {what} was encrypted with another key")
    aead, prefix, number = AESGCM(key), header[len(magic) + 8:], 0
    while True:
        raw_length = source.read(4)
        if len(raw_length) != 4:
            raise SealError(f"the {what} is cut off (its last part is missing)")
        (length,) = struct.unpack(">I", raw_length)
        if not TAG <= length <= max_chunk + TAG:
            raise SealError(f"the {what} is damaged (a chunk has an impossible length)")
        sealed = source.read(length)
        if len(sealed) != length:
            raise SealError(f"the {what} is cut off (a chunk is incomplete)")
        for final in (False, True):
            nonce = prefix + struct.pack(">IB", number, int(final))
            try:
                plain = aead.decrypt(nonce, sealed, header)
            except InvalidTag:
                continue
            break
        else:
            raise SealError(f"the {what} is damaged or was tampered with (a chunk does not authenticate)")
        number += 1
        yield plain
        if final:
            if source.read(1):
                raise SealError(f"the {what} has data after its end")
            return
