"""The storage layer against a real S3 server (MinIO or SeaweedFS)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from bws.storage import INDEX_LOG_EXPIRY_DAYS, ObjectStore, PreconditionFailed, StorageUnavailable
from tests.integration.conftest import S3Server

pytestmark = pytest.mark.integration


def test_bucket_gets_expiry_rules_for_transient_data_and_the_change_log(store: ObjectStore) -> None:
    rules = store.client.get_bucket_lifecycle(store.bucket).rules
    days = {rule.rule_filter.prefix: rule.expiration.days for rule in rules}
    assert days == {"uploads/": 1, "claims/": 1, "tokens/": 1, "indexes/": INDEX_LOG_EXPIRY_DAYS}


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


def test_concurrent_claims_give_each_sample_to_one_caller(store: ObjectStore) -> None:
    for index in range(6):
        store.put_sample("tok", index, "any", b"img", "image/png")
    with ThreadPoolExecutor(4) as pool:
        claimed = list(pool.map(lambda _: store.claim_samples("tok"), range(4)))
    keys = [s.key for batch in claimed for s in batch]
    assert len(keys) == 6 and len(set(keys)) == 6


def test_concurrent_tries_never_exceed_the_maximum(store: ObjectStore) -> None:
    with ThreadPoolExecutor(8) as pool:
        numbers = list(pool.map(lambda _: store.claim_try("tok", 3), range(8)))
    assert sorted(n for n in numbers if n is not None) == [1, 2, 3]
    store.return_try("tok", 2)
    assert store.claim_try("tok", 3) == 2


def test_released_samples_are_gone(store: ObjectStore) -> None:
    store.put_sample("tok", 0, "left", b"img", "image/png")
    claimed = store.claim_samples("tok")
    store.release_samples("tok", claimed)
    assert store.samples("tok") == [] and store.list_keys("claims/") == []


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
