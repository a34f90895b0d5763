"""The storage layer against a real S3 server (MinIO or SeaweedFS)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from bws.storage import INDEX_LOG_EXPIRY_DAYS, ObjectStore, PreconditionFailed, StorageUnavailable
from tests.integration.conftest import S3Server

pytestmark = pytest.mark.integration


def test_bucket_gets_expiry_rules_for_transient_data_the_change_log_and_the_audit_trail(store: ObjectStore) -> None:
    rules = store.client.get_bucket_lifecycle(store.bucket).rules
    days = {rule.rule_filter.prefix: rule.expiration.days for rule in rules}
    assert days == {"uploads/": 1, "tokens/": 1, "indexes/": INDEX_LOG_EXPIRY_DAYS,
                    "audit/": store.settings.audit_retention_days}


def test_put_get_and_missing_objects(store: ObjectStore) -> None:
    store.put("a/b", b"data")
    assert store.get("a/b") == b"data" and store.exists("a/b")
    assert store.get("a/missing") is None and not store.exists("a/missing")
    store.delete(["a/b", "a/never-there"])
    assert store.get("a/b") is None


def test_conditional_writes_are_atomic(store: ObjectStore) -> None:
    store.put_conditional("t/1", b"first")
    with pytest.raises(PreconditionFailed):
        store.put_conditional("t/1", b"second")
    _, etag = store.get_with_etag("t/1")
    store.put_conditional("t/1", b"third", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put_conditional("t/1", b"fourth", if_match=etag)  # stale ETag
    assert store.get("t/1") == b"third"


def test_a_try_claims_the_samples_uploaded_with_its_token(store: ObjectStore) -> None:
    assert store.claim_try("tok", 3) is None  # nothing uploaded: no try is used
    first = store.put_sample("tok", 1, "left", b"img", "image/png")
    second = store.put_sample("tok", 0, "any", b"img", "image/png")
    claimed = store.claim_try("tok", 3)
    assert claimed is not None and claimed.number == 1
    assert [s.key for s in claimed.samples] == [second, first]  # in the client's order
    assert store.claim_try("tok", 3) is None  # the samples are the first call's
    assert store.list_keys("tokens/tok/") == ["tokens/tok/try-1"]  # the second one used no try


def test_concurrent_calls_share_neither_a_try_nor_a_sample(store: ObjectStore) -> None:
    for index in range(6):
        store.put_sample("tok", index, "any", b"img", "image/png")
    with ThreadPoolExecutor(6) as pool:
        claims = [c for c in pool.map(lambda _: store.claim_try("tok", 3), range(6)) if c is not None]
    keys = [s.key for claimed in claims for s in claimed.samples]
    assert len(keys) == len(set(keys)) == 6  # every sample goes to exactly one call
    numbers = [claimed.number for claimed in claims]
    assert len(numbers) == len(set(numbers)) and set(numbers) <= {1, 2, 3}


def test_tries_never_exceed_the_maximum_and_one_given_back_is_used_again(store: ObjectStore) -> None:
    numbers = []
    for index in range(4):
        store.put_sample("tok", index, "any", b"img", "image/png")
        claimed = store.claim_try("tok", 3)
        assert claimed is not None
        numbers.append(claimed.number)
        store.release_samples(claimed.samples)
    assert numbers == [1, 2, 3, 0]  # 0: every try is used (the caller drops the samples)
    store.return_try("tok", 2)
    store.put_sample("tok", 9, "any", b"img", "image/png")
    claimed = store.claim_try("tok", 3)
    assert claimed is not None and claimed.number == 2


def test_with_every_try_used_only_unnamed_samples_are_handed_back_to_drop(store: ObjectStore) -> None:
    in_use = store.put_sample("tok", 0, "any", b"img", "image/png")
    assert store.claim_try("tok", 1) is not None  # a call under way, with the token's only try
    late = store.put_sample("tok", 1, "any", b"img", "image/png")
    claimed = store.claim_try("tok", 1)
    assert claimed is not None and claimed.number == 0
    assert [s.key for s in claimed.samples] == [late]  # not the sample the other call uses
    assert in_use in [s.key for s in store.samples("tok")]


def test_released_samples_are_gone(store: ObjectStore) -> None:
    store.put_sample("tok", 0, "left", b"img", "image/png")
    claimed = store.claim_try("tok", 3)
    assert claimed is not None
    store.release_samples(claimed.samples)
    assert store.samples("tok") == []


def test_wrong_credentials_give_a_clear_error(s3_server: S3Server) -> None:
    wrong = S3Server(s3_server.kind, s3_server.endpoint, s3_server.access_key, "wrong-secret-key")
    with pytest.raises(StorageUnavailable, match="object store"):
        wrong.store("it-wrong").ping()


def test_stale_samples_and_token_state_are_swept(store: ObjectStore) -> None:
    store.put_sample("old", 0, "any", b"img", "image/png")
    store.claim_try("old", 3)
    store.put("templates/bws/1/1", b"template")  # templates are not transient: never swept
    assert store.delete_stale(3600) == 0  # nothing is an hour old
    assert store.delete_stale(0) == 2
    assert store.samples("old") == [] and store.list_keys("tokens/") == []
    assert store.exists("templates/bws/1/1")
