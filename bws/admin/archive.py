"""The backup archive: a tar stream, encrypted in chunks, written and read without holding it.

Inside (plain, once decrypted) it is a POSIX tar, in this order:

- ``manifest.json``: format, when, from which bucket and scope, the tool's version;
- ``templates/{storage}/{partition}/{class}.json`` and ``thumbnails/...json``: each object's
  plain JSON (what the enrollment service seals in the bucket), with its SHA-256 in the
  member's PAX header ``BWS.sha256``, checked as the member is read;
- ``checksums.json``, last: how many members came before it and the SHA-256 of their digests
  and names in order, so that a member missing, added or moved is found (and the list of
  digests need not be held in memory while an archive of a million templates is written).

Outside, the stream is cut in chunks of up to 64 KiB, each sealed with AES-256-GCM under the
backup key (``BWS_BACKUP_KEY``, base64 of 32 bytes; not the template key, so that an archive
can be restored into a deployment with another template key). A chunk's nonce is a random
prefix, its number and a final flag, and the header is associated data: chunks cannot be
reordered, dropped, cut off or moved to another archive without the read failing (the STREAM
construction of Hoang, Reyhanitabar, Rogaway and Vizár).

    header = b"BWSBACKUP1" + key id (8 bytes) + nonce prefix (7 bytes)
    chunk  = length (4 bytes, big endian) + AES-GCM(key, prefix + number (4) + final (1), plain, header)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
import time
from collections.abc import Iterator
from typing import IO, Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"BWSBACKUP1"
FORMAT = "bws-backup/1"
CHUNK = 64 * 1024
_TAG = 16
DIGEST_HEADER = "BWS.sha256"
SUMS = "checksums.json"
MANIFEST = "manifest.json"


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ArchiveError(ValueError):
    """The archive cannot be read: another key, tampered with, cut off, or not an archive."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"bws backup key id\0" + key).digest()[:8]


class _EncryptingWriter(io.RawIOBase):
    """A write-only file: what is written goes out sealed, a chunk at a time."""

    def __init__(self, out: IO[bytes], key: bytes) -> None:
        self._out = out
        self._aead = AESGCM(key)
        self._prefix = os.urandom(7)
        self._header = MAGIC + key_id(key) + self._prefix
        self._buffer = bytearray()
        self._number = 0
        out.write(self._header)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buffer += bytes(data)
        while len(self._buffer) > CHUNK:  # keep one back: the last chunk must carry the final flag
            self._emit(bytes(self._buffer[:CHUNK]), final=False)
            del self._buffer[:CHUNK]
        return len(data)

    def _emit(self, plain: bytes, final: bool) -> None:
        nonce = self._prefix + struct.pack(">IB", self._number, int(final))
        sealed = self._aead.encrypt(nonce, plain, self._header)
        self._out.write(struct.pack(">I", len(sealed)) + sealed)
        self._number += 1

    def finish(self) -> None:
        self._emit(bytes(self._buffer), final=True)
        self._buffer.clear()
        self._out.flush()


class _DecryptingReader(io.RawIOBase):
    """A read-only file over a sealed stream; raises ArchiveError on any fault."""

    def __init__(self, source: Readable, key: bytes) -> None:
        self._source = source
        header = source.read(len(MAGIC) + 15)
        if len(header) != len(MAGIC) + 15 or not header.startswith(MAGIC):
            raise ArchiveError("this is not a bws-admin backup archive")
        if header[len(MAGIC):len(MAGIC) + 8] != key_id(key):
            raise ArchiveError("the archive was encrypted with another backup key (BWS_BACKUP_KEY)")
        self._aead = AESGCM(key)
        self._header = header
        self._prefix = header[len(MAGIC) + 8:]
        self._plain = b""
        self._number = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> None:
        raw_length = self._source.read(4)
        if len(raw_length) != 4:
            raise ArchiveError("the archive is cut off (its last part is missing)")
        (length,) = struct.unpack(">I", raw_length)
        if not _TAG <= length <= CHUNK + _TAG:
            raise ArchiveError("the archive is damaged (a chunk has an impossible length)")
        sealed = self._source.read(length)
        if len(sealed) != length:
            raise ArchiveError("the archive is cut off (a chunk is incomplete)")
        for final in (False, True):
            nonce = self._prefix + struct.pack(">IB", self._number, int(final))
            try:
                self._plain = self._aead.decrypt(nonce, sealed, self._header)
            except InvalidTag:
                continue
            self._number += 1
            self._done = final
            if final and self._source.read(1):
                raise ArchiveError("the archive has data after its end")
            return
        raise ArchiveError("the archive is damaged or was tampered with (a chunk does not authenticate)")

    def readinto(self, buffer: Any) -> int:
        while not self._plain and not self._done:
            self._next_chunk()
        count = min(len(buffer), len(self._plain))
        buffer[:count] = self._plain[:count]
        self._plain = self._plain[count:]
        return count


class ArchiveWriter:
    """Write members one at a time: ``with ArchiveWriter(out, key, manifest) as archive: archive.add(...)``."""

    def __init__(self, out: IO[bytes], key: bytes, manifest: dict[str, Any]) -> None:
        self._sealed = _EncryptingWriter(out, key)
        self._tar = tarfile.open(fileobj=self._sealed, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self._sums = _Sums()
        self._put(MANIFEST, json.dumps({"format": FORMAT, **manifest}, indent=1).encode())

    def add(self, name: str, data: bytes) -> None:
        self._put(name, data)

    def _put(self, name: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
        info.pax_headers = {DIGEST_HEADER: digest}
        self._tar.addfile(info, io.BytesIO(data))
        self._tar.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every member's header otherwise: memory per template
        self._sums.add(digest, name)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            sums = self._sums.document()
            info = tarfile.TarInfo(SUMS)
            info.size, info.mtime, info.mode = len(sums), int(time.time()), 0o600
            self._tar.addfile(info, io.BytesIO(sums.encode()))
            self._tar.close()
            self._sealed.finish()


def read_archive(source: Readable, key: bytes) -> Iterator[tuple[str, bytes]]:
    """The archive's members as (name, data), checked, in order; the manifest first. Raises
    ArchiveError when anything does not verify; the member list (SHA256SUMS) is checked at the end."""
    reader = io.BufferedReader(_DecryptingReader(source, key), CHUNK)
    seen = _Sums()
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for info in tar:
                if not info.isfile():
                    raise ArchiveError(f"the archive holds something other than files: {info.name}")
                extracted = tar.extractfile(info)
                data = extracted.read() if extracted is not None else b""
                if info.name == SUMS:
                    if data.decode() != seen.document():
                        raise ArchiveError("the archive's checksum list does not match its members")
                    while reader.read(CHUNK):  # the rest must authenticate up to the final chunk
                        pass
                    return
                digest = hashlib.sha256(data).hexdigest()
                if info.pax_headers.get(DIGEST_HEADER) != digest:
                    raise ArchiveError(f"the member {info.name} does not match its checksum")
                if not seen.count and info.name != MANIFEST:
                    raise ArchiveError("the archive does not begin with its manifest")
                seen.add(digest, info.name)
                tar.members.clear()  # type: ignore[attr-defined]  # as when writing
                yield info.name, data
    except tarfile.TarError as error:
        raise ArchiveError(f"the archive's content is not a valid tar stream: {error}") from None
    raise ArchiveError(f"the archive ends without its checksum list ({SUMS})")


class _Sums:
    """The running checksum list: count, and SHA-256 over each member's digest and name."""

    def __init__(self) -> None:
        self.count = 0
        self._chain = hashlib.sha256()

    def add(self, digest: str, name: str) -> None:
        self.count += 1
        self._chain.update(f"{digest}  {name}\n".encode())

    def document(self) -> str:
        return json.dumps({"members": self.count, "sha256_of_member_digests": self._chain.hexdigest()}) + "\n"


def manifest_of(data: bytes) -> dict[str, Any]:
    manifest = json.loads(data)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"the archive's format is not {FORMAT}")
    return manifest
