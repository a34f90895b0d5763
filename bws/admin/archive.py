"""The backup archive: a tar stream, encrypted in chunks, written and read without holding it.

Inside (plain, once decrypted) it is a POSIX tar, in this order:

- ``manifest.json``: format, when, from which bucket and scope, the tool's version;
- ``templates/{storage}/{partition}/{class}.json`` and ``thumbnails/...json``: each object's
  plain JSON (what the enrollment service seals in the bucket), with its SHA-256 in the
  member's PAX header ``BWS.sha256``, checked as the member is read;
- ``checksums.json``, last: how many members came before it and the SHA-256 of their digests
  and names in order, so that a member missing, added or moved is found (and the list of
  digests need not be held in memory while an archive of a million templates is written).

Outside, the stream is cut in chunks of up to 64 KiB, sealed with AES-256-GCM under the backup
key (``BWS_BACKUP_KEY``, base64 of 32 bytes; not the template key, so that an archive can be
restored into a deployment with another template key) as ``bws/sealing.py`` seals a stream:
chunks cannot be changed, reordered, dropped, cut off or moved to another archive without the
read failing. The header's magic is ``BWSBACKUP1``.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Iterator
from typing import IO, Any

from bws.sealing import Readable, Sealer, SealError, open_stream

MAGIC = b"BWSBACKUP1"
FORMAT = "bws-backup/1"
CHUNK = 64 * 1024
DIGEST_HEADER = "BWS.sha256"
SUMS = "checksums.json"
MANIFEST = "manifest.json"


class ArchiveError(ValueError):
    """The archive cannot be read: another key, tampered with, cut off, or not an archive."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"bws backup key id\0" + key).digest()[:8]


class _EncryptingWriter(io.RawIOBase):
    """A write-only file: what is written goes out sealed, a chunk at a time."""

    def __init__(self, out: IO[bytes], key: bytes) -> None:
        self._out = out
        self._sealer = Sealer(key, MAGIC, key_id(key))
        self._buffer = bytearray()
        out.write(self._sealer.header)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buffer += bytes(data)
        while len(self._buffer) > CHUNK:  # keep one back: the last chunk must carry the final flag
            self._out.write(self._sealer.seal(bytes(self._buffer[:CHUNK])))
            del self._buffer[:CHUNK]
        return len(data)

    def finish(self) -> None:
        self._out.write(self._sealer.seal(bytes(self._buffer), final=True))
        self._buffer.clear()
        self._out.flush()


class _DecryptingReader(io.RawIOBase):
    """A read-only file over a sealed stream; raises ArchiveError on any fault."""

    def __init__(self, source: Readable, key: bytes) -> None:
        self._chunks = open_stream(source, MAGIC, lambda found: key if found == key_id(key) else None, CHUNK,
                                   "bws-admin backup archive")
        self._plain = b""
        self._done = False
        try:  # the header is checked at once: another key fails before anything is read
            self._plain = next(self._chunks)
        except StopIteration:
            self._done = True
        except SealError as error:
            raise ArchiveError(str(error).replace("another key", "another backup key (BWS_BACKUP_KEY)")) from None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._plain and not self._done:
            try:
                self._plain = next(self._chunks)
            except StopIteration:
                self._done = True
            except SealError as error:
                raise ArchiveError(str(error)) from None
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
