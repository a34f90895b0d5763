"""Biometric templates: the embeddings of one class, encrypted at rest, updated atomically.

A template is JSON (class id, encoder name and version, times, embeddings, tags) sealed with
AES-256-GCM; the class id is the associated data, so a template copied under another class's
key does not decrypt. Concurrent enrollments of one class never lose an update: each write is
conditional on the ETag that was read, and a lost race is retried.

Beside it (``thumbnails/{class}``, sealed the same way, read only when asked for) are the
template's thumbnails: the aligned face crops its embeddings were computed from, as PNG. They
are what a template is re-computed from when the encoder changes (BWS 3's "upgrade").

Every sealed object names the key that sealed it (``key_id``: 8 bytes of a hash of the key,
which tells nothing about it), so that the key can be rotated online: the service writes with
``BWS_TEMPLATE_KEY`` and reads with it or any of ``BWS_TEMPLATE_READ_KEYS``, and
``bws-admin keys rotate`` re-seals what another key sealed (``TemplateStore.reseal``). Objects
written before key ids existed (``BWT1``) are opened with whichever configured key fits.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bws.faces import DEFAULT_ENCODER, ENCODER_NAME, ENCODER_VERSION, Encoder
from bws.storage import TEMPLATES, THUMBNAILS, ObjectStore, PreconditionFailed, class_key, thumbnails_key

_LEGACY = b"BWT1"  # magic, nonce, ciphertext: no key id
_MAGIC = b"BWT2"  # magic, key id (8 bytes), nonce, ciphertext
_WRITE_ATTEMPTS = 8


def key_id(key: bytes) -> str:
    """The id of a template key, as sealed objects record it (hex): a hash, not the key."""
    return hashlib.sha256(b"bws template key id\0" + key).digest()[:8].hex()


def sealed_key_id(blob: bytes) -> str | None:
    """The id of the key that sealed ``blob`` (its first 12 bytes suffice); None when the
    object predates key ids."""
    return blob[4:12].hex() if blob.startswith(_MAGIC) else None


class TemplateError(RuntimeError):
    """A stored template cannot be read (wrong key or tampered with)."""


@dataclass
class Template:
    class_id: str
    encoder_name: str = ENCODER_NAME
    encoder_version: int = ENCODER_VERSION
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    embeddings: list[list[float]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # BWS 3 tags, sorted (templates written before have none)

    def made_by(self, encoder: Encoder) -> bool:
        return (self.encoder_name, self.encoder_version) == (encoder.name, encoder.version)

    def matrix(self) -> np.ndarray:
        return np.asarray(self.embeddings, dtype=np.float32).reshape(-1, 128)


Read = tuple[Template | None, str | None]  # a template as read, and its ETag (None: there is none)


@dataclass
class Thumbnail:
    enrolled: float  # when its image was enrolled
    png: bytes  # the aligned 112×112 face crop


class _Sealed:
    """AES-256-GCM with the class id (and what the object is) as associated data; seals with
    the first key, opens with the key the object names."""

    def __init__(self, keys: tuple[bytes, ...], purpose: str = "") -> None:
        self._keys = {key_id(key): AESGCM(key) for key in reversed(keys)}  # the first key wins a clash
        self.current = key_id(keys[0])
        self._purpose = purpose

    def seal(self, class_id: str, plain: bytes) -> bytes:
        nonce = os.urandom(12)
        aad = (class_id + self._purpose).encode()
        return _MAGIC + bytes.fromhex(self.current) + nonce + self._keys[self.current].encrypt(nonce, plain, aad)

    def open(self, class_id: str, blob: bytes) -> bytes:
        aad = (class_id + self._purpose).encode()
        if blob.startswith(_LEGACY):  # no key id: whichever key fits
            for aead in self._keys.values():
                with contextlib.suppress(InvalidTag):
                    return aead.decrypt(blob[4:16], blob[16:], aad)
            raise TemplateError(f"the template of {class_id} does not decrypt with the configured keys")
        if not blob.startswith(_MAGIC):
            raise TemplateError(f"the template of {class_id} has an unknown format")
        found = self._keys.get(blob[4:12].hex())
        if found is None:
            raise TemplateError(f"the template of {class_id} was sealed with key {blob[4:12].hex()}, which is "
                                "neither BWS_TEMPLATE_KEY nor one of BWS_TEMPLATE_READ_KEYS")
        try:
            return found.decrypt(blob[12:24], blob[24:], aad)
        except InvalidTag:
            raise TemplateError(f"the template of {class_id} does not decrypt (tampered with?)") from None


class TemplateStore:
    def __init__(self, store: ObjectStore, key: bytes, encoder: Encoder = DEFAULT_ENCODER,
                 read_keys: tuple[bytes, ...] = ()) -> None:
        """``key`` seals what is written; it and ``read_keys`` open what is read."""
        self.store = store
        self.encoder = encoder
        self._sealed = _Sealed((key, *read_keys))
        self._sealed_thumbnails = _Sealed((key, *read_keys), "#thumbnails")
        self.key_id = self._sealed.current
        self.key = key
        self._keys = {bytes.fromhex(key_id(k)): k for k in reversed((key, *read_keys))}

    def key_by_id(self, found: bytes) -> bytes | None:
        """The configured key with this id (8 bytes), for what else is sealed with template keys."""
        return self._keys.get(found)

    def is_current(self, template: Template) -> bool:
        """Whether the template's embeddings can be compared with this service's."""
        return template.made_by(self.encoder)

    def new(self, class_id: str, **fields: object) -> Template:
        return Template(class_id=class_id, encoder_name=self.encoder.name, encoder_version=self.encoder.version,
                        **fields)  # type: ignore[arg-type]

    def _seal(self, template: Template) -> bytes:
        return self._sealed.seal(template.class_id, json.dumps(template.__dict__).encode())

    def _open(self, class_id: str, blob: bytes) -> Template:
        return Template(**json.loads(self._sealed.open(class_id, blob)))

    def get(self, class_id: str) -> Template | None:
        return self.read(class_id)[0]

    def read(self, class_id: str) -> Read:
        """The class's template and its ETag (None, None: it has none); ``add`` takes it, so
        that an enrollment reads the template once."""
        found = self.store.get_with_etag(class_key(class_id))
        return (None, None) if found is None else (self._open(class_id, found[0]), found[1])

    def add(self, class_id: str, embeddings: list[np.ndarray], max_images: int,
            upgraded: list[np.ndarray] | None = None, read: Read | None = None) -> tuple[Template, Template | None]:
        """Add embeddings to the class's template (creating it); returns it and the template as
        it was before (None: it is new).

        Only the newest ``max_images`` embeddings are kept. A template made by another encoder
        is replaced (keeping its tags and creation time), since its embeddings cannot be
        compared with the new ones: by ``upgraded`` (its thumbnails, embedded again) and the
        new embeddings. ``read``: the template as ``read`` returned it just before (written
        only if it has not changed since; else read again).
        """
        def change(found: Template | None) -> Template:
            if found is None:
                template = self.new(class_id)
            elif not self.is_current(found):
                template = self.new(class_id, created=found.created, tags=found.tags)
                template.embeddings = [_stored(e) for e in upgraded or []]
            else:
                template = found
            template.embeddings = (template.embeddings + [_stored(e) for e in embeddings])[-max_images:]
            return template

        template, before = self._update(class_id, change, read)
        assert template is not None
        return template, before

    def set_tags(self, class_id: str, tags: list[str]) -> Template | None:
        """Replace the tags of the class's template; None (and nothing written) when it has none."""
        def change(found: Template | None) -> Template | None:
            if found is not None:
                found.tags = sorted(set(tags))
            return found

        return self._update(class_id, change)[0]

    def _update(self, class_id: str, change: Callable[[Template | None], Template | None],
                read: Read | None = None) -> tuple[Template | None, Template | None]:
        """Read the class's template (or take ``read``), apply ``change`` and write the result if
        it did not move meanwhile (else read again); returns (written, as read). ``change``
        returning None writes nothing."""
        for _ in range(_WRITE_ATTEMPTS):
            before, etag = read or self.read(class_id)
            read = None
            created = None if before is None else before.created  # change() may alter the template read
            template = change(None if before is None else Template(**{**before.__dict__}))
            if template is None:
                return None, before
            template.updated = time.time()
            if created is not None:
                template.created = created
            try:
                self.store.put_conditional(class_key(class_id), self._seal(template), if_match=etag)
            except PreconditionFailed:
                continue  # another call wrote this class first: read again
            return template, before
        raise TemplateError(f"the template of {class_id} is changing too often to update")

    def delete(self, class_id: str) -> bool:
        """Remove the class's template and its thumbnails; False when it had no template."""
        existed = self.store.exists(class_key(class_id))
        self.store.delete([class_key(class_id), thumbnails_key(class_id)])
        return existed

    def reseal(self, key: str) -> bool:
        """Seal a template or thumbnails object (``templates/...`` or ``thumbnails/...``) with
        the current key if another key sealed it, unless it changed meanwhile (then again);
        whether it was re-sealed. Used by ``bws-admin keys rotate``, while the service runs."""
        sealed, class_id = self._sealer(key)
        for _ in range(_WRITE_ATTEMPTS):
            found = self.store.get_with_etag(key)
            if found is None or sealed_key_id(found[0]) == sealed.current:
                return False
            blob = sealed.seal(class_id, sealed.open(class_id, found[0]))
            try:
                self.store.put_conditional(key, blob, if_match=found[1])
            except PreconditionFailed:
                continue
            return True
        raise TemplateError(f"the object {key} is changing too often to re-seal")

    def open_object(self, key: str, blob: bytes) -> bytes:
        """The plain JSON of a sealed template or thumbnails object (backups)."""
        sealed, class_id = self._sealer(key)
        return sealed.open(class_id, blob)

    def seal_object(self, key: str, plain: bytes) -> bytes:
        """Seal the plain JSON of a template or thumbnails object for ``key`` (restores)."""
        sealed, class_id = self._sealer(key)
        return sealed.seal(class_id, plain)

    def _sealer(self, key: str) -> tuple[_Sealed, str]:
        if key.startswith(TEMPLATES):
            return self._sealed, key[len(TEMPLATES):]
        if key.startswith(THUMBNAILS):
            return self._sealed_thumbnails, key[len(THUMBNAILS):]
        raise ValueError(f"{key} is neither a template nor thumbnails")

    # -- thumbnails --------------------------------------------------------------------------

    def thumbnails(self, class_id: str) -> list[Thumbnail]:
        found = self.store.get_with_etag(thumbnails_key(class_id))
        return [] if found is None else self._open_thumbnails(class_id, found[0])

    def add_thumbnails(self, class_id: str, pngs: list[bytes], max_images: int, new_class: bool = False) -> int:
        """Keep the newest ``max_images`` thumbnails with the added ones; returns how many are
        stored. ``new_class``: the template was just created, so there are likely none yet (tried
        without reading first; if some are there after all, read as usual)."""
        now = time.time()
        for attempt in range(_WRITE_ATTEMPTS):
            found = None if new_class and attempt == 0 else self.store.get_with_etag(thumbnails_key(class_id))
            kept = [] if found is None else self._open_thumbnails(class_id, found[0])
            kept = (kept + [Thumbnail(now, png) for png in pngs])[-max_images:]
            plain = json.dumps([{"enrolled": t.enrolled, "png": base64.b64encode(t.png).decode()} for t in kept])
            sealed = self._sealed_thumbnails.seal(class_id, plain.encode())
            try:
                self.store.put_conditional(thumbnails_key(class_id), sealed,
                                           if_match=None if found is None else found[1])
            except PreconditionFailed:
                continue
            return len(kept)
        raise TemplateError(f"the thumbnails of {class_id} are changing too often to update")

    def _open_thumbnails(self, class_id: str, blob: bytes) -> list[Thumbnail]:
        items = json.loads(self._sealed_thumbnails.open(class_id, blob))
        return [Thumbnail(float(i["enrolled"]), base64.b64decode(i["png"])) for i in items]


def _stored(embedding: np.ndarray) -> list[float]:
    return np.asarray(embedding, dtype=float).round(6).tolist()
