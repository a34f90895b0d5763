"""Biometric templates: the embeddings of one class, encrypted at rest, updated atomically.

A template is JSON (class id, encoder name and version, times, embeddings, tags) sealed with
AES-256-GCM; the class id is the associated data, so a template copied under another class's
key does not decrypt. Concurrent enrollments of one class never lose an update: each write is
conditional on the ETag that was read, and a lost race is retried.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bws.faces import ENCODER_NAME, ENCODER_VERSION
from bws.storage import ObjectStore, PreconditionFailed, class_key

_MAGIC = b"BWT1"
_WRITE_ATTEMPTS = 8


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

    @property
    def current_encoder(self) -> bool:
        return (self.encoder_name, self.encoder_version) == (ENCODER_NAME, ENCODER_VERSION)

    def matrix(self) -> np.ndarray:
        return np.asarray(self.embeddings, dtype=np.float32).reshape(-1, 128)


class TemplateStore:
    def __init__(self, store: ObjectStore, key: bytes) -> None:
        self.store = store
        self._aead = AESGCM(key)

    def _seal(self, template: Template) -> bytes:
        nonce = os.urandom(12)
        plain = json.dumps(template.__dict__).encode()
        return _MAGIC + nonce + self._aead.encrypt(nonce, plain, template.class_id.encode())

    def _open(self, class_id: str, blob: bytes) -> Template:
        if not blob.startswith(_MAGIC):
            raise TemplateError(f"the template of {class_id} has an unknown format")
        nonce, sealed = blob[4:16], blob[16:]
        try:
            plain = self._aead.decrypt(nonce, sealed, class_id.encode())
        except InvalidTag:
            raise TemplateError(f"the template of {class_id} does not decrypt with the configured key") from None
        return Template(**json.loads(plain))

    def get(self, class_id: str) -> Template | None:
        found = self.store.get_with_etag(class_key(class_id))
        return None if found is None else self._open(class_id, found[0])

    def add(self, class_id: str, embeddings: list[np.ndarray], max_images: int) -> tuple[Template, bool]:
        """Add embeddings to the class's template (creating it); returns it and whether it is new.

        Only the newest ``max_images`` embeddings are kept. A template made by another encoder
        is replaced (keeping its tags), since its embeddings cannot be compared with the new ones.
        """
        def change(found: Template | None) -> Template:
            if found is None:
                template = Template(class_id=class_id)
            elif not found.current_encoder:
                template = Template(class_id=class_id, created=found.created, tags=found.tags)
            else:
                template = found
            added = [e.astype(float).round(6).tolist() for e in embeddings]
            template.embeddings = (template.embeddings + added)[-max_images:]
            return template

        template, before = self._update(class_id, change)
        assert template is not None
        return template, before is None

    def set_tags(self, class_id: str, tags: list[str]) -> Template | None:
        """Replace the tags of the class's template; None (and nothing written) when it has none."""
        def change(found: Template | None) -> Template | None:
            if found is not None:
                found.tags = sorted(set(tags))
            return found

        return self._update(class_id, change)[0]

    def _update(self, class_id: str, change: Callable[[Template | None], Template | None]
                ) -> tuple[Template | None, Template | None]:
        """Read the class's template, apply ``change`` and write the result if it did not move
        meanwhile (else again); returns (written, as read). ``change`` returning None writes nothing."""
        for _ in range(_WRITE_ATTEMPTS):
            found = self.store.get_with_etag(class_key(class_id))
            before = None if found is None else self._open(class_id, found[0])
            created = None if before is None else before.created  # change() may alter the template read
            template = change(None if before is None else Template(**{**before.__dict__}))
            if template is None:
                return None, before
            template.updated = time.time()
            if created is not None:
                template.created = created
            try:
                self.store.put_conditional(class_key(class_id), self._seal(template),
                                           if_match=None if found is None else found[1])
            except PreconditionFailed:
                continue  # another call wrote this class first: read again
            return template, before
        raise TemplateError(f"the template of {class_id} is changing too often to update")

    def delete(self, class_id: str) -> bool:
        if not self.store.exists(class_key(class_id)):
            return False
        self.store.delete([class_key(class_id)])
        return True
