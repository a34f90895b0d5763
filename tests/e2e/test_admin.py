"""``bws-admin`` against a running deployment: every command as an operator runs it (a separate
process with the deployment's environment), checked through the service's own APIs.

Runs its own stack: it restarts processes with other apps, another bucket and other keys.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bws.devrun import Stack
from tests.e2e.conftest import bws3_of, client_of, running_stack
from tests.support import images
from tests.support.bws3 import Bws3Client

pytestmark = pytest.mark.e2e


def admin(stack: Stack, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
          ) -> subprocess.CompletedProcess[str]:
    """Run ``bws-admin`` as an operator would, with the deployment's settings."""
    return subprocess.run([sys.executable, "-m", "bws.admin", *args], env=stack.env() | (env or {}), input=stdin,
                          capture_output=True, text=True, timeout=300, check=False)


def admin_json(stack: Stack, *args: str, env: dict[str, str] | None = None, code: int = 0) -> Any:
    done = admin(stack, "--json", *args, env=env)
    assert done.returncode == code, (done.stdout, done.stderr)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with running_stack("admin", request, BWS_AUDIT_FLUSH_SECONDS="0.2") as running:
        yield running


@pytest.fixture(scope="module")
def bws3(stack: Stack) -> Bws3Client:
    return bws3_of(stack)


@pytest.fixture(scope="module")
def faces() -> dict[str, bytes]:
    return {"astronaut": images.encode(images.astronaut()), "grace": images.encode(images.grace_hopper())}


@pytest.fixture(scope="module")
def enrolled(bws3: Bws3Client, faces: dict[str, bytes]) -> dict[int, str]:
    """Classes of bws/1 (the stack app's BWS 3 partition) and whose face they hold."""
    people = {100 + n: ("grace", "astronaut")[n % 2] for n in range(1, 11)}  # 101: astronaut
    for class_id, who in people.items():
        assert bws3.enroll(class_id, faces[who]).status == 200
    return people


def restart_all(stack: Stack, **env: str) -> None:
    stack.extra_env.update(env)
    for name in ("liveness_service", "enroll_service", "gateway"):
        stack.restart(name)


def verified(bws3: Bws3Client, class_id: int, face: bytes) -> bool:
    reply = bws3.verify(class_id, face)
    assert reply.status == 200, reply.body
    return bool(reply.json.get("verified"))


def test_the_command_is_installed_and_every_command_has_help() -> None:
    script = Path(sys.executable).parent / "bws-admin"
    assert script.is_file(), "make install puts bws-admin next to the venv's python"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "Exit codes" in done.stdout
    for command in ("app create", "app rotate", "app retire", "app remove", "app check", "classes list",
                    "classes show", "classes delete", "backup export", "backup import", "backup verify", "keys new",
                    "keys status", "keys rotate", "audit", "doctor"):
        helped = subprocess.run([str(script), *command.split(), "--help"], capture_output=True, text=True,
                                timeout=60, check=False)
        assert helped.returncode == 0 and "Usage: bws-admin " + command in helped.stdout, command


def test_doctor_passes_on_a_healthy_deployment_and_names_what_is_broken(stack: Stack) -> None:
    healthy = admin(stack, "doctor")
    assert healthy.returncode == 0, healthy.stdout
    assert "FAIL" not in healthy.stdout and "all checks passed" in healthy.stdout
    checks = {c["name"]: c for c in admin_json(stack, "doctor")}
    for name in ("object store", "expiry rules", "clock", "liveness service", "enrollment service", "gateway",
                 "model face_recognition_sface_2021dec_int8bq.onnx", "template keys", "token secret"):
        assert checks[name]["status"] == "OK", checks[name]

    broken = admin_json(stack, "doctor", code=1, env={"BWS_S3_SECRET_KEY": "minioadmin",
                                                      "BWS_LIVENESS_ADDRESS": "127.0.0.1:1"})
    failed = {c["name"]: c for c in broken if c["status"] == "FAIL"}
    assert set(failed) >= {"object store", "liveness service", "S3 credentials"}, failed
    assert all(c["fix"] for c in failed.values())

    missing = admin(stack, "doctor", env={"BWS_TEMPLATE_KEY": "not base64!"})
    assert missing.returncode == 1 and "BWS_TEMPLATE_KEY must be base64" in missing.stdout


def test_classes_are_listed_a_page_at_a_time_shown_and_deleted_like_deleteclass(
        stack: Stack, bws3: Bws3Client, enrolled: dict[int, str], faces: dict[str, bytes]) -> None:
    first = admin_json(stack, "classes", "list", "bws/1", "--limit", "3")
    assert [c["class_id"] for c in first["classes"]] == ["bws/1/101", "bws/1/102", "bws/1/103"]
    assert first["next"] == "bws/1/103"
    rest = admin_json(stack, "classes", "list", "bws/1", "--after", first["next"], "--limit", "1000")
    assert [c["class_id"] for c in rest["classes"]] == [f"bws/1/{n}" for n in range(104, 111)]
    assert rest["next"] is None
    shown = admin_json(stack, "classes", "show", "bws/1/102")
    assert shown["available"] and shown["images"] == 1 and shown["encoder_version"] == 1 and shown["thumbnails"] == 1

    assert bws3.set_tags(105, ["delete-me"]).status == 200
    refused = admin(stack, "classes", "delete", "bws/1/105", stdin="n\n")
    assert refused.returncode == 1 and bws3.status(105).json["available"]
    deleted = admin_json(stack, "--operator", "dpo", "classes", "delete", "bws/1/105", "bws/1/999", "--yes")
    assert deleted["classes"] == [{"class_id": "bws/1/105", "deleted": True},
                                  {"class_id": "bws/1/999", "deleted": False}]
    assert admin(stack, "classes", "show", "bws/1/105").returncode == 1
    found = bws3.search(faces["astronaut"], tags=["delete-me"]).json
    assert all(m["classId"] != 105 for r in found["result"] for m in r.get("matches", [])), found

    assert admin(stack, "classes", "delete", "not-a-class", "--yes").returncode == 2


def test_every_call_and_admin_action_is_in_the_audit_trail_even_after_a_delete(
        stack: Stack, bws3: Bws3Client, enrolled: dict[int, str], faces: dict[str, bytes]) -> None:
    classic = client_of(stack)
    assert bws3.verify(101, faces["astronaut"]).status == 200
    token = classic.token(bcid="bws.1.101", task="verify", livedetection=False)
    assert classic.upload(token, faces["astronaut"]).status == 200
    assert classic.call("verify", token).json == {"Success": True}
    still = "data:image/png;base64," + base64.b64encode(faces["astronaut"]).decode()
    body = json.dumps({"liveimage1": still, "liveimage2": still}).encode()
    assert classic.basic_call("POST", "/extension/livedetection", body).json is False
    assert classic.basic_call("DELETE", "/extension/deleteclass?bcid=bws/1/104").status == 200
    assert admin(stack, "--operator", "dpo", "classes", "delete", "bws/1/103", "--yes").returncode == 0
    assert bws3.status(103).json["available"] is False

    def trail(*args: str) -> list[dict[str, Any]]:
        return admin_json(stack, "audit", *args)

    deadline = time.monotonic() + 10  # the gateway writes its records every 0.2 s here
    while len(of_103 := trail("--class", "bws/1/103")) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [(r["api"], r["app"], r["action"], r["outcome"]) for r in of_103] == [
        ("bws3", stack.app_id, "enroll", "NEW_TEMPLATE_CREATED"), ("admin", "admin:dpo", "deleteclass", "deleted"),
        ("bws3", stack.app_id, "get_template_status", "OK")]
    assert any(r["api"] == "classic" and r["action"] == "deleteclass" and r["outcome"] == "deleted"
               for r in trail("--class", "bws/1/104"))
    verify = [r for r in trail("--class", "bws/1/101", "--action", "verify")][-1]
    assert verify["outcome"] == "verified" and verify["request_id"] and set(verify) == {
        "time", "api", "app", "action", "bcid", "outcome", "request_id"}  # never a score, image or embedding
    classic_verify = trail("--class", "bws/1/101", "--action", "verification")
    assert [(r["api"], r["app"], r["outcome"]) for r in classic_verify] == [("classic", stack.app_id, "succeeded")]
    liveness = trail("--app", stack.app_id, "--action", "livedetection")
    assert len(liveness) == 1 and liveness[0]["bcid"] is None and liveness[0]["outcome"] != "live"
    assert all(r["app"] == "admin:dpo" for r in trail("--app", "admin:dpo"))
    assert trail("--since", "2000-01-01", "--until", "2000-01-02") == []
    assert admin(stack, "audit", "--since", "yesterday").returncode == 2


def test_apps_are_created_rotated_and_retired_and_the_gateway_takes_them(stack: Stack) -> None:
    classic = client_of(stack)
    original = stack.env()["BWS_APPS"]
    made = admin_json(stack, "app", "create", "kiosk", "--storage", "bws", "--partition", "9",
                      "--bws3-partition", "9")
    assert len(made["secret"]) >= 43 and len(base64.b64decode(made["bws3_key"])) == 64
    assert made["secret"] not in original
    checked = admin_json(stack, "app", "check", env={"BWS_APPS": made["BWS_APPS"]})
    assert checked["valid"] and "kiosk" in checked["apps"]

    def token_status(secret: str) -> int:
        return classic.request("GET", "/extension/token?id=kiosk&bcid=bws/9/1&task=verify",
                               headers=classic.basic("kiosk", secret)).status

    try:
        restart_all(stack, BWS_APPS=made["BWS_APPS"])
        assert token_status(made["secret"]) == 200
        rotated = admin_json(stack, "app", "rotate", "kiosk", env={"BWS_APPS": made["BWS_APPS"]})
        stack.extra_env["BWS_APPS"] = rotated["BWS_APPS"]
        stack.restart("gateway")
        assert token_status(made["secret"]) == 200 and token_status(rotated["secret"]) == 200
        retired = admin_json(stack, "app", "retire", "kiosk", env={"BWS_APPS": rotated["BWS_APPS"]})
        assert retired["removed"] == 1
        stack.extra_env["BWS_APPS"] = retired["BWS_APPS"]
        stack.restart("gateway")
        assert token_status(made["secret"]) == 401 and token_status(rotated["secret"]) == 200
    finally:
        stack.extra_env.pop("BWS_APPS", None)
        stack.restart("gateway")

    weak = json.dumps([{"id": "x", "secret": "short", "storage": "bws"}])
    refused = admin(stack, "app", "check", env={"BWS_APPS": weak})
    assert refused.returncode == 3 and "shorter than 16 characters" in refused.stderr
    assert admin(stack, "app", "create", "test-app", "--storage", "bws").returncode == 2  # exists


@pytest.fixture
def backup_key() -> dict[str, str]:
    return {"BWS_BACKUP_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}


def test_a_backup_restores_into_a_deployment_with_another_key_resumably(
        stack: Stack, bws3: Bws3Client, enrolled: dict[int, str], faces: dict[str, bytes], tmp_path: Path,
        backup_key: dict[str, str]) -> None:
    assert bws3.set_tags(102, ["ward-7"]).status == 200
    archive = tmp_path / "bws.backup"
    exported = admin_json(stack, "backup", "export", str(archive), env=backup_key)
    expected = {c["class_id"] for c in admin_json(stack, "classes", "list", "bws/1")["classes"]}
    assert exported["templates"] == exported["thumbnails"] == len(expected) >= 5
    assert admin_json(stack, "backup", "verify", str(archive), env=backup_key)["templates"] == len(expected)
    assert admin(stack, "backup", "verify", str(archive)).returncode == 3  # no key
    piped = subprocess.run([sys.executable, "-m", "bws.admin", "--json", "backup", "verify", "-", "--key-file", "-"],
                           input=backup_key["BWS_BACKUP_KEY"].encode() + b"\n" + archive.read_bytes(),
                           env=stack.env(), capture_output=True, timeout=120, check=False)
    assert piped.returncode == 0 and json.loads(piped.stdout)["templates"] == len(expected)  # kubectl exec -i
    other_key = {"BWS_BACKUP_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
    assert admin(stack, "backup", "verify", str(archive), env=other_key).returncode == 5
    tampered = tmp_path / "tampered.backup"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 1
    tampered.write_bytes(data)
    assert admin(stack, "backup", "verify", str(tampered), env=backup_key).returncode == 5

    original = {"BWS_S3_BUCKET": "bws-data", "BWS_TEMPLATE_KEY": stack.secrets.template_key}
    restart_all(stack, BWS_S3_BUCKET="bws-restored", BWS_TEMPLATE_KEY=base64.b64encode(os.urandom(32)).decode())
    try:
        assert bws3.verify(101, faces["astronaut"]).status == 404  # an empty deployment
        cut = tmp_path / "cut.backup"
        cut.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
        assert admin(stack, "backup", "import", str(cut), env=backup_key).returncode == 5  # what it read stays
        restored = admin_json(stack, "backup", "import", str(archive), env=backup_key)
        assert restored["added"] + restored["skipped"] == len(expected) and restored["skipped"] >= 1
        assert restored["conflicts"] == 0
        again = admin_json(stack, "backup", "import", str(archive), env=backup_key)
        assert (again["added"], again["skipped"]) == (0, len(expected))

        assert verified(bws3, 101, faces["astronaut"]) and not verified(bws3, 101, faces["grace"])
        assert bws3.status(102).json["tags"] == ["ward-7"] and bws3.status(102).json["thumbnailsStored"] == 1
        found = bws3.search(faces["grace"], tags=["ward-7"]).json
        assert [m["classId"] for m in found["result"][0]["matches"]] == [102], found

        assert bws3.enroll(102, faces["astronaut"]).status == 200  # now differs from the archive
        conflicting = admin_json(stack, "backup", "import", str(archive), env=backup_key, code=1)
        assert conflicting["conflicts"] == 1 and conflicting["conflicting"][0]["class_id"] == "bws/1/102"
        replaced = admin_json(stack, "backup", "import", str(archive), "--on-conflict", "replace", env=backup_key)
        assert replaced["replaced"] == 1 and bws3.status(102).json["featureVectors"] == 1
    finally:
        restart_all(stack, **original)


def test_the_template_key_is_rotated_online_while_calls_go_on(
        stack: Stack, bws3: Bws3Client, enrolled: dict[int, str], faces: dict[str, bytes]) -> None:
    old, new = stack.secrets.template_key, base64.b64encode(os.urandom(32)).decode()
    before = admin_json(stack, "keys", "status")
    assert list(before["census"].values()) == [sum(before["census"].values())]  # one key so far
    stack.extra_env.update(BWS_TEMPLATE_KEY=new, BWS_TEMPLATE_READ_KEYS=old)
    stack.restart("enroll_service")

    outcomes: list[tuple[int, bool]] = []
    stop = threading.Event()

    def calls() -> None:
        while not stop.is_set():
            reply = bws3.verify(101, faces["astronaut"])
            outcomes.append((reply.status, bool(reply.json.get("verified"))))
            outcomes.append((bws3.enroll(120, faces["grace"]).status, True))

    worker = threading.Thread(target=calls)
    worker.start()
    try:
        first = admin_json(stack, "keys", "rotate", "--limit", "2")
        assert first["resealed"] == 2 and not first["complete"]
        rest = admin_json(stack, "keys", "rotate")
        assert rest["resumed_after"] and rest["complete"] and rest["left_on_other_keys"] == 0, rest
    finally:
        stop.set()
        worker.join(60)
    assert outcomes and all(outcome == (200, True) for outcome in outcomes), outcomes
    census = admin_json(stack, "keys", "status")
    assert list(census["census"]) == [census["current"]]

    stack.extra_env.pop("BWS_TEMPLATE_READ_KEYS")  # the old key is gone for good
    stack.restart("enroll_service")
    assert verified(bws3, 101, faces["astronaut"]) and verified(bws3, 120, faces["grace"])
    stale = admin_json(stack, "doctor", code=1, env={"BWS_TEMPLATE_KEY": old})
    assert {c["name"]: c["status"] for c in stale}["templates' keys"] == "FAIL"
