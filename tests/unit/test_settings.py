"""Settings from the environment (bws/settings.py): fail fast, never log secrets."""

from __future__ import annotations

import base64
import json

import pytest

from bws.settings import EnrollSettings, GatewaySettings, LivenessSettings, SettingsError, parse_bool, redacted

STORAGE = {"BWS_S3_ENDPOINT": "127.0.0.1:9000", "BWS_S3_ACCESS_KEY": "ak", "BWS_S3_SECRET_KEY": "sk-secret"}
APPS = json.dumps([{"id": "a", "secret": "0123456789abcdef", "storage": "bws", "partitions": [1, 2]}])


def gateway_env(**changes: str) -> dict[str, str]:
    return {**STORAGE, "BWS_APPS": APPS, "BWS_TOKEN_SECRET": "t" * 32, **changes}


def test_analyses_are_shared_through_the_store_only_when_asked() -> None:
    # One replica per service (the dev run) serves every call from memory; several need the store.
    assert not LivenessSettings.from_env(STORAGE).storage.share_analyses
    assert LivenessSettings.from_env({**STORAGE, "BWS_SHARE_ANALYSES": "true"}).storage.share_analyses
    with pytest.raises(SettingsError, match="BWS_SHARE_ANALYSES"):
        LivenessSettings.from_env({**STORAGE, "BWS_SHARE_ANALYSES": "maybe"})


def test_gateway_settings_read_apps_and_defaults() -> None:
    settings = GatewaySettings.from_env(gateway_env())
    assert settings.apps[0].may_use("bws", 2) and not settings.apps[0].may_use("bws", 3)
    assert settings.public_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize("missing", ["BWS_APPS", "BWS_TOKEN_SECRET", "BWS_S3_ENDPOINT"])
def test_missing_required_setting_names_the_variable(missing: str) -> None:
    env = gateway_env()
    del env[missing]
    with pytest.raises(SettingsError, match=missing):
        GatewaySettings.from_env(env)


@pytest.mark.parametrize("changes", [
    {"BWS_TOKEN_SECRET": "short"},
    {"BWS_APPS": json.dumps([{"id": "a", "secret": "short", "storage": "bws"}])},
    {"BWS_APPS": "not json"},
    {"BWS_HTTP_PORT": "eighty"},
])
def test_weak_or_malformed_settings_fail_at_start(changes: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        GatewaySettings.from_env(gateway_env(**changes))


def test_template_key_must_be_32_bytes() -> None:
    with pytest.raises(SettingsError, match="BWS_TEMPLATE_KEY"):
        EnrollSettings.from_env({**STORAGE, "BWS_TEMPLATE_KEY": base64.b64encode(b"short").decode()})


def test_redacted_settings_hide_every_secret() -> None:
    text = str(redacted(GatewaySettings.from_env(gateway_env())))
    assert "sk-secret" not in text and "t" * 32 not in text and "0123456789abcdef" not in text


@pytest.mark.parametrize("raw,value", [("true", True), ("False", False), ("1", True), ("0", False),
                                       ("maybe", None), ("", None)])
def test_parse_bool_never_reads_false_as_true(raw: str, value: bool | None) -> None:
    assert parse_bool(raw) is value


def test_liveness_thresholds_come_from_settings_with_calibrated_defaults() -> None:
    from bws.settings import LivenessSettings, LivenessThresholds

    settings = LivenessSettings.from_env({**STORAGE, "BWS_LIVENESS_MIN_TURN_DEGREES": "7.5"})
    assert settings.thresholds.min_turn_degrees == 7.5
    assert settings.thresholds.min_planarity_residual == LivenessThresholds().min_planarity_residual
    with pytest.raises(SettingsError, match="BWS_LIVENESS_MIN_RIGID_RATIO_SCORE"):
        LivenessSettings.from_env({**STORAGE, "BWS_LIVENESS_MIN_RIGID_RATIO_SCORE": "high"})


def _bws3_app(**bws3: object) -> str:
    return json.dumps([{"id": "a", "secret": "0123456789abcdef", "storage": "bws", "partitions": [1, 2],
                        "bws3": bws3}])


def test_an_app_with_bws3_keys_is_a_bws3_client_of_one_partition() -> None:
    keys = [base64.b64encode(b"k" * 32).decode(), base64.b64encode(b"n" * 64).decode()]
    app = GatewaySettings.from_env(gateway_env(BWS_APPS=_bws3_app(keys=keys, partition=2))).apps[0]
    assert app.client_keys == (b"k" * 32, b"n" * 64) and app.bws3_partition == 2
    assert GatewaySettings.from_env(gateway_env()).apps[0].client_keys == ()  # not a BWS 3 client
    redacted_text = str(redacted(GatewaySettings.from_env(gateway_env(BWS_APPS=_bws3_app(keys=keys, partition=1)))))
    assert "k" * 32 not in redacted_text and keys[0] not in redacted_text


@pytest.mark.parametrize(("bws3", "message"), [
    ({"keys": [base64.b64encode(b"k" * 31).decode()], "partition": 1}, "256 bits"),
    ({"keys": ["not base64!"], "partition": 1}, "not base64"),
    ({"keys": []}, "non-empty list of keys"),
    ({"keys": [base64.b64encode(b"k" * 32).decode()], "partition": 3}, "one of its partitions"),
    ({"keys": [base64.b64encode(b"k" * 32).decode()], "partition": -1}, "one of its partitions"),
    ({"keys": [base64.b64encode(b"k" * 32).decode()]}, "partition of app 'a' is required"),
])
def test_weak_or_malformed_bws3_clients_fail_at_start(bws3: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        GatewaySettings.from_env(gateway_env(BWS_APPS=_bws3_app(**bws3)))


def test_the_encoder_version_must_be_a_known_one() -> None:
    key = base64.b64encode(b"x" * 32).decode()
    settings = EnrollSettings.from_env({**STORAGE, "BWS_TEMPLATE_KEY": key, "BWS_ENCODER_VERSION": "2"})
    assert settings.encoder_version == 2 and settings.store_thumbnails
    with pytest.raises(SettingsError, match="BWS_ENCODER_VERSION"):
        EnrollSettings.from_env({**STORAGE, "BWS_TEMPLATE_KEY": key, "BWS_ENCODER_VERSION": "7"})


@pytest.mark.parametrize("raw", ["0.5,0.6", "0.7,0.6,0.8,0.9,0.95", "a,b,c,d,e"])
def test_photo_levels_are_five_ascending_thresholds(raw: str) -> None:
    key = base64.b64encode(b"x" * 32).decode()
    with pytest.raises(SettingsError, match="BWS_PHOTO_LEVEL_THRESHOLDS"):
        EnrollSettings.from_env({**STORAGE, "BWS_TEMPLATE_KEY": key, "BWS_PHOTO_LEVEL_THRESHOLDS": raw})
