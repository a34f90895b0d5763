"""The deploy manifests (deploy/): valid Kubernetes objects that keep the promises of deploy/README.md.

Offline and fast: no cluster, no kustomize binary, no Docker engine. The kustomization is
rendered here in Python (its resources, generators, namespace, labels and images; any other
kustomize feature makes ``test_kustomization_uses_only_what_this_renderer_understands`` fail,
so the renderer cannot silently drift from ``kubectl apply -k``). Every rendered object is then
checked against the strict Kubernetes JSON schemas bundled in ``kubernetes-validate`` (unknown
fields are errors), for the oldest and the newest Kubernetes version we support.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import http.server
import importlib.util
import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bws.settings import EnrollSettings, GatewaySettings, LivenessSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKER = DEPLOY / "docker"
COMPOSE = DEPLOY / "compose.yaml"

# The oldest Kubernetes version the manifests must work on (gRPC probes are GA since 1.27,
# autoscaling/v2 since 1.23) and the newest whose schemas kubernetes-validate bundles.
K8S_VERSIONS = ("1.30", ".".join(kubernetes_validate.latest_version().split(".")[:2]))

NAMESPACE = "bws"
GATEWAY, LIVENESS, ENROLL, MINIO = "gateway", "liveness", "enroll", "minio"
ADMIN = "bws-admin"  # the operator's command line, as a suspended CronJob (deploy/k8s/admin.yaml)
GRPC_PORTS = {LIVENESS: 50051, ENROLL: 50052}
PROCESSES = {GATEWAY: "gateway", LIVENESS: "liveness_service", ENROLL: "enroll_service"}
IMAGES = {GATEWAY: "bws-gateway", LIVENESS: "bws-liveness-service", ENROLL: "bws-enroll-service"}

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
RENDERER_KEYS = {
    "apiVersion", "kind", "namespace", "labels", "resources",
    "configMapGenerator", "secretGenerator", "images",
}
# Names of variables that hold credentials (for the "no literal secret" checks).
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|ACCESS_KEY|TOKEN|TEMPLATE_KEY|ROOT_USER|BWS_APPS)", re.I)

# Valid stand-ins for the secret values, to build each process's settings from the manifests.
DUMMY_SECRETS = {
    "MINIO_ROOT_USER": "dummy-user",
    "MINIO_ROOT_PASSWORD": "dummy-password-1234",
    "BWS_APPS": json.dumps([{"id": "app", "secret": "s" * 24, "storage": "bws"}]),
    "BWS_TOKEN_SECRET": "t" * 48,
    "BWS_TEMPLATE_KEY": base64.b64encode(bytes(32)).decode(),
}


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def read_env_file(path: Path) -> dict[str, str]:
    """An env file as kustomize reads it: KEY=VALUE lines, '#' comments and blank lines skipped."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()), f"{path}:{number}: not KEY=VALUE"
        values[key.strip()] = value
    return values


def secret_env_example(path: str) -> Path:
    """The committed example of a (git-ignored) secret env file."""
    return K8S / (path + ".example")


def render() -> list[dict[str, Any]]:
    """What `kubectl apply -k deploy/k8s` sends, minus the generators' hash suffixes.

    Secrets are generated from the committed ``*.env.example`` files, never from real ones.
    """
    kust = kustomization()
    docs: list[dict[str, Any]] = []
    for resource in kust["resources"]:
        path = K8S / resource
        assert path.is_file(), f"kustomization.yaml lists {resource}, which is not a file in deploy/k8s"
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for gen in kust.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env in gen.get("envs", []):
            data.update(read_env_file(K8S / env))
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    for gen in kust.get("secretGenerator", []):
        data = {}
        for env in gen.get("envs", []):
            data.update(read_env_file(secret_env_example(env)))
        docs.append({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": gen["name"]},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        })
    labels: dict[str, str] = {}
    for entry in kust.get("labels", []):
        labels.update(entry["pairs"])
    retag = {image["name"]: image for image in kust.get("images", [])}
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        if doc["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = kust["namespace"]
        meta.setdefault("labels", {}).update(labels)
        for container in all_containers(doc):
            name, _, tag = container["image"].partition(":")
            if name in retag:
                container["image"] = f"{retag[name].get('newName', name)}:{retag[name].get('newTag', tag)}"
    return docs


def pod_template(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod a workload makes (metadata and spec): a CronJob's is inside its jobTemplate."""
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]
    if doc["kind"] in WORKLOAD_KINDS:
        return doc["spec"]["template"]
    if doc["kind"] == "Pod":
        return doc
    return None


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    template = pod_template(doc)
    return None if template is None else template["spec"]


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    template = pod_template(doc)
    assert template is not None, f"{doc['kind']} {doc['metadata']['name']} makes no pods"
    return template["metadata"].get("labels", {})


def all_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render()


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind} {name!r}, found {len(found)}"
    return found[0]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if pod_spec(d) is not None]


def only_container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(doc)["containers"]  # type: ignore[index]
    assert len(containers) == 1
    return containers[0]


def container_env(doc: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """The environment a workload's container gets, with secret values replaced by valid dummies."""
    container = only_container(doc)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, "envFrom is used for ConfigMaps only (secrets are named key by key)"
        env.update(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = DUMMY_SECRETS[ref["key"]]
    return env


def secret_refs(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    """A workload's variables that come from a Secret: name -> its secretKeyRef."""
    return {
        var["name"]: var["valueFrom"]["secretKeyRef"]
        for var in only_container(doc).get("env", []) if "secretKeyRef" in var.get("valueFrom", {})
    }


# ------------------------------------------------------------------------------------------
# Rendering and schema validation
# ------------------------------------------------------------------------------------------


def test_kustomization_uses_only_what_this_renderer_understands() -> None:
    kust = kustomization()
    assert set(kust) <= RENDERER_KEYS, f"teach render() about {set(kust) - RENDERER_KEYS}"
    assert kust["namespace"] == NAMESPACE
    for gen in [*kust.get("configMapGenerator", []), *kust.get("secretGenerator", [])]:
        assert set(gen) <= {"name", "envs"}, f"generator {gen['name']}: only `envs` is rendered here"
    for entry in kust.get("labels", []):
        assert not entry.get("includeSelectors"), "selectors are written in each file, not by kustomize"
    for resource in kust["resources"]:
        assert (K8S / resource).is_file() and "/" not in resource


def test_every_yaml_file_in_k8s_is_listed_as_a_resource() -> None:
    listed = set(kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert present == listed


def test_rendered_objects_are_the_expected_set(docs: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name in (GATEWAY, LIVENESS, ENROLL):
        assert {("Deployment", name), ("Service", name), ("ServiceAccount", name)} <= kinds
    assert {("StatefulSet", MINIO), ("Service", MINIO), ("ServiceAccount", MINIO)} <= kinds
    assert {("HorizontalPodAutoscaler", LIVENESS), ("HorizontalPodAutoscaler", ENROLL)} <= kinds
    assert {("CronJob", ADMIN), ("ServiceAccount", ADMIN)} <= kinds
    assert ("Namespace", NAMESPACE) in kinds
    assert len(kinds) == len(docs), "two objects share a kind and name"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_validates_against_the_strict_schema(docs: list[dict[str, Any]], version: str) -> None:
    for doc in docs:
        try:
            validated = kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(p) for p in error.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {where}: {error.message}")
        assert validated == version


@pytest.mark.parametrize(
    "breakage",
    ["misspelled container field", "misspelled probe field", "string replicas", "unknown top-level field"],
)
def test_strict_validation_rejects_a_broken_deployment(docs: list[dict[str, Any]], breakage: str) -> None:
    broken = copy.deepcopy(find(docs, "Deployment", GATEWAY))
    container = only_container(broken)
    if breakage == "misspelled container field":
        container["imagePulPolicy"] = container.pop("imagePullPolicy")
    elif breakage == "misspelled probe field":
        container["readinessProbe"]["httpGet"]["paht"] = container["readinessProbe"]["httpGet"].pop("path")
    elif breakage == "string replicas":
        broken["spec"]["replicas"] = "two"
    else:
        broken["spek"] = broken.pop("spec")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


# ------------------------------------------------------------------------------------------
# Pods: resources, hardening, service accounts
# ------------------------------------------------------------------------------------------


def test_every_container_has_cpu_and_memory_requests_and_limits(docs: list[dict[str, Any]]) -> None:
    for doc in workloads(docs):
        for container in all_containers(doc):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), (
                    f"{doc['metadata']['name']}/{container['name']}: resources.{bound} needs cpu and memory"
                )


def test_every_pod_runs_non_root_read_only_with_nothing_to_escalate(docs: list[dict[str, Any]]) -> None:
    for doc in workloads(docs):
        name = doc["metadata"]["name"]
        spec = pod_spec(doc)
        assert spec is not None
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert isinstance(pod["runAsUser"], int) and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True, name
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in all_containers(doc):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert not context["capabilities"].get("add"), name
            assert context.get("privileged") is not True, name
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in tmp_volumes, f"{name}: /tmp must be a writable emptyDir"


def test_every_pod_has_its_own_service_account_without_a_token(docs: list[dict[str, Any]]) -> None:
    for doc in workloads(docs):
        spec = pod_spec(doc)
        assert spec is not None
        account = find(docs, "ServiceAccount", spec["serviceAccountName"])
        assert spec["serviceAccountName"] == doc["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False
        assert account["automountServiceAccountToken"] is False


def test_the_namespace_enforces_the_restricted_pod_security_profile(docs: list[dict[str, Any]]) -> None:
    labels = find(docs, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_images_are_named_pinned_and_retaggable(docs: list[dict[str, Any]]) -> None:
    retag = {image["name"] for image in kustomization()["images"]}
    raw_images = set()
    for resource in kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text()):
            if doc:
                raw_images |= {c["image"] for c in all_containers(doc)}
    for image in raw_images:
        name, _, tag = image.partition(":")
        assert name in retag, f"{image}: add it to `images:` in kustomization.yaml"
        assert tag and tag != "latest", f"{image}: pin a tag"
    for workload, image in IMAGES.items():
        assert only_container(find(docs, "Deployment", workload))["image"].split(":")[0] == image


# ------------------------------------------------------------------------------------------
# Probes, ports and settings
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [LIVENESS, ENROLL])
def test_grpc_services_probe_the_liveness_and_readiness_health_services(
    docs: list[dict[str, Any]], name: str
) -> None:
    container = only_container(find(docs, "Deployment", name))
    port = GRPC_PORTS[name]
    metrics_port = {LIVENESS: 9101, ENROLL: 9102}[name]
    assert container["ports"] == [{"name": "grpc", "containerPort": port, "protocol": "TCP"},
                                  {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"}]
    assert {"name": f"BWS_{name.upper()}_METRICS_LISTEN", "value": f"0.0.0.0:{metrics_port}"} in container["env"]
    assert container["livenessProbe"]["grpc"] == {"port": port, "service": "liveness"}
    assert container["readinessProbe"]["grpc"] == {"port": port, "service": "readiness"}
    startup = container["startupProbe"]
    assert startup["grpc"]["port"] == port and startup["grpc"]["service"] in ("liveness", "readiness")
    window = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    assert window >= 120, "the startupProbe must leave time for imports and models on a slow node"
    service = find(docs, "Service", name)
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": name}
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [("grpc", port, "grpc")]


def test_gateway_serves_http_and_bws3_grpc_and_probes_both(docs: list[dict[str, Any]]) -> None:
    container = only_container(find(docs, "Deployment", GATEWAY))
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                  {"name": "grpc", "containerPort": 9090, "protocol": "TCP"}]
    assert {"name": "BWS_GRPC_PORT", "value": "9090"} in container["env"]
    assert container["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["livenessProbe"]["grpc"] == {"port": 9090, "service": "liveness"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    service = find(docs, "Service", GATEWAY)
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", 8080, "http"), ("grpc", 9090, "grpc")]
    assert "EXPOSE 8080 9090" in (K8S.parent / "docker" / "gateway.Dockerfile").read_text()
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["gateway"]
    assert "127.0.0.1:9090:9090" in compose["ports"] and compose["environment"]["BWS_GRPC_PORT"] == "9090"


def test_selectors_match_their_pod_templates(docs: list[dict[str, Any]]) -> None:
    for doc in workloads(docs):
        template_labels = pod_labels(doc)
        assert template_labels["app.kubernetes.io/name"] == doc["metadata"]["name"]
        selector = doc["spec"].get("selector")  # Jobs and CronJobs have none (Kubernetes makes it)
        for key, value in (selector or {}).get("matchLabels", {}).items():
            assert template_labels[key] == value
    for service in (d for d in docs if d["kind"] == "Service"):
        assert any(
            all(pod_labels(w).get(k) == v for k, v in service["spec"]["selector"].items())
            for w in workloads(docs)
        ), f"Service {service['metadata']['name']} selects no pods"


def test_each_process_gets_a_complete_valid_configuration(docs: list[dict[str, Any]]) -> None:
    gateway = GatewaySettings.from_env(container_env(find(docs, "Deployment", GATEWAY), docs))
    assert (gateway.host, gateway.port) == ("0.0.0.0", 8080)
    assert gateway.liveness_address == f"{LIVENESS}:{GRPC_PORTS[LIVENESS]}"
    assert gateway.enroll_address == f"{ENROLL}:{GRPC_PORTS[ENROLL]}"
    liveness = LivenessSettings.from_env(container_env(find(docs, "Deployment", LIVENESS), docs))
    assert liveness.listen == f"0.0.0.0:{GRPC_PORTS[LIVENESS]}"
    enroll = EnrollSettings.from_env(container_env(find(docs, "Deployment", ENROLL), docs))
    assert enroll.listen == f"0.0.0.0:{GRPC_PORTS[ENROLL]}"
    minio_port = find(docs, "Service", MINIO)["spec"]["ports"][0]["port"]
    for settings in (gateway, liveness, enroll):
        assert settings.storage.endpoint == f"{MINIO}:{minio_port}"
    for doc in (find(docs, "Deployment", n) for n in (GATEWAY, LIVENESS, ENROLL)):
        assert container_env(doc, docs)["BWS_LOG_FORMAT"] == "json"
    # Calls are spread over several replicas of each service: what one computed from a sample
    # must reach the others (and the gateway deletes it with the sample).
    assert gateway.storage.share_analyses and liveness.storage.share_analyses and enroll.storage.share_analyses


def test_every_bws_variable_in_the_manifests_is_a_known_setting(docs: list[dict[str, Any]]) -> None:
    known = set(re.findall(r"\bBWS_[A-Z0-9_]+", "".join(
        (ROOT / "bws" / name).read_text() for name in ("settings.py", "logs.py")
    )))
    used = set()
    for doc in workloads(docs):
        used |= {k for k in container_env(doc, docs) if k.startswith("BWS_")}
    compose = yaml.safe_load(COMPOSE.read_text())
    for service in compose["services"].values():
        used |= {k for k in service.get("environment", {}) if k.startswith("BWS_")}
    assert used - known == set(), "misspelled or unknown settings"


# ------------------------------------------------------------------------------------------
# NetworkPolicies: who may reach which port
# ------------------------------------------------------------------------------------------

OUTSIDE = "<outside the namespace>"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        ok = {
            "In": present and value in expr.get("values", []),
            "NotIn": not present or value not in expr.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[expr["operator"]]
        if not ok:
            return False
    return True


def allowed_sources(docs: list[dict[str, Any]], target: str, port: int) -> set[str]:
    """The workloads (and OUTSIDE) allowed to open a TCP connection to `target` on `port`."""
    pods = {w["metadata"]["name"]: pod_labels(w) for w in workloads(docs)}
    policies = [
        p for p in docs
        if p["kind"] == "NetworkPolicy" and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], pods[target])
    ]
    if not policies:
        return {*pods, OUTSIDE}  # not isolated
    allowed: set[str] = set()
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p.get("protocol", "TCP") == "TCP" and p.get("port") in (None, port) for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                allowed |= {*pods, OUTSIDE}
                continue
            for peer in peers:
                if "namespaceSelector" in peer or "ipBlock" in peer:
                    allowed.add(OUTSIDE)  # other namespaces or addresses: counted as outside
                if set(peer) == {"podSelector"}:
                    allowed |= {name for name, labels in pods.items() if selects(peer["podSelector"], labels)}
    return allowed


def test_the_namespace_denies_ingress_by_default(docs: list[dict[str, Any]]) -> None:
    deny = [
        p for p in docs
        if p["kind"] == "NetworkPolicy" and p["spec"]["podSelector"] == {}
        and p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress")
    ]
    assert len(deny) == 1


@pytest.mark.parametrize(
    ("target", "port", "sources"),
    [
        (GATEWAY, 8080, {GATEWAY, LIVENESS, ENROLL, MINIO, ADMIN, OUTSIDE}),
        (GATEWAY, 9090, {GATEWAY, LIVENESS, ENROLL, MINIO, ADMIN, OUTSIDE}),
        (LIVENESS, 50051, {GATEWAY, ADMIN}),
        (ENROLL, 50052, {GATEWAY, ADMIN}),
        (MINIO, 9000, {GATEWAY, LIVENESS, ENROLL, ADMIN}),
    ],
)
def test_network_policies_allow_exactly_the_promised_paths(
    docs: list[dict[str, Any]], target: str, port: int, sources: set[str]
) -> None:
    assert allowed_sources(docs, target, port) == sources


@pytest.mark.parametrize(("target", "port"), [(GATEWAY, 9000), (LIVENESS, 50052), (ENROLL, 50051), (MINIO, 9001)])
def test_network_policies_deny_other_ports(docs: list[dict[str, Any]], target: str, port: int) -> None:
    assert allowed_sources(docs, target, port) == set()


def test_network_policies_let_the_admin_job_reach_what_its_doctor_checks(docs: list[dict[str, Any]]) -> None:
    """The services' gRPC health, the store and the gateway's /readyz. Its own pod listens on
    nothing, so no policy admits anyone to it."""
    for target, port in [(LIVENESS, GRPC_PORTS[LIVENESS]), (ENROLL, GRPC_PORTS[ENROLL]), (MINIO, 9000),
                         (GATEWAY, 8080)]:
        assert ADMIN in allowed_sources(docs, target, port), f"bws-admin cannot reach {target}:{port}"
    assert "ports" not in only_container(find(docs, "CronJob", ADMIN))


# ------------------------------------------------------------------------------------------
# bws-admin: a suspended CronJob, the template of one-off Jobs (deploy/k8s/admin.yaml)
# ------------------------------------------------------------------------------------------

CRON_FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))  # minute hour day month weekday


def valid_cron(schedule: str) -> bool:
    """A standard five-field cron schedule with numbers (no names, no @macros) in range."""
    fields = schedule.split()
    if len(fields) != len(CRON_FIELD_RANGES):
        return False
    for field, (low, high) in zip(fields, CRON_FIELD_RANGES, strict=True):
        for part in field.split(","):
            match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/([1-9]\d*))?", part)
            if not match:
                return False
            bounds = [int(n) for n in match.group(2, 3) if n is not None]
            if not all(low <= n <= high for n in bounds) or bounds != sorted(bounds):
                return False
    return True


@pytest.mark.parametrize(
    ("schedule", "valid"),
    [("17 4 * * *", True), ("*/15 0-6 1,15 * 1-5", True), ("0 24 * * *", False), ("0 4 * *", False),
     ("@daily", False), ("5-1 * * * *", False)],
)
def test_valid_cron_knows_a_schedule(schedule: str, valid: bool) -> None:
    assert valid_cron(schedule) is valid


def test_the_admin_cronjob_is_suspended_and_makes_one_shot_jobs(docs: list[dict[str, Any]]) -> None:
    cron = find(docs, "CronJob", ADMIN)
    assert cron["apiVersion"] == "batch/v1"
    assert cron["spec"]["suspend"] is True, "it runs only when an operator makes a Job from it"
    assert valid_cron(cron["spec"]["schedule"]), "the schedule must be valid even while suspended"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0, "a failed check is a report, not something to retry"
    assert job["ttlSecondsAfterFinished"] > 0
    assert job.get("activeDeadlineSeconds", 0) > 0, "a hung check must not hold a pod forever"
    assert pod_spec(cron)["restartPolicy"] == "Never"  # type: ignore[index]
    for labels in (cron["metadata"]["labels"], cron["spec"]["jobTemplate"]["metadata"]["labels"], pod_labels(cron)):
        assert labels["app.kubernetes.io/name"] == ADMIN


def test_the_admin_job_runs_bws_admin_doctor_with_the_enroll_image(docs: list[dict[str, Any]]) -> None:
    """The enroll-service image holds every piece of code bws-admin uses (backup and keys need
    enroll_service), and it installs bws-admin on PATH (see the Dockerfile tests)."""
    container = only_container(find(docs, "CronJob", ADMIN))
    assert [*container.get("command", []), *container.get("args", [])] == ["bws-admin", "doctor"]
    assert container["image"] == only_container(find(docs, "Deployment", ENROLL))["image"]
    assert container["image"].split(":")[0] == IMAGES[ENROLL]


def test_the_admin_job_gets_every_secret_variable_the_processes_get(docs: list[dict[str, Any]]) -> None:
    admin = find(docs, "CronJob", ADMIN)
    expected: dict[str, dict[str, str]] = {}
    for name in (GATEWAY, LIVENESS, ENROLL):
        for var, ref in secret_refs(find(docs, "Deployment", name)).items():
            assert expected.setdefault(var, ref) == ref, f"{var} comes from two different secrets"
    named = {"BWS_APPS", "BWS_TOKEN_SECRET", "BWS_TEMPLATE_KEY", "BWS_S3_ACCESS_KEY", "BWS_S3_SECRET_KEY"}
    assert named <= set(expected)
    assert secret_refs(admin) == expected
    assert [s["configMapRef"]["name"] for s in only_container(admin)["envFrom"]] == ["bws-config"]


def test_the_admin_job_has_the_settings_of_every_process(docs: list[dict[str, Any]]) -> None:
    """So that doctor checks each process's settings, and reaches the services and the
    gateway's /readyz through their Services (it asks http://BWS_HTTP_HOST:BWS_HTTP_PORT)."""
    env = container_env(find(docs, "CronJob", ADMIN), docs)
    gateway_env = container_env(find(docs, "Deployment", GATEWAY), docs)
    admin = GatewaySettings.from_env(env)
    EnrollSettings.from_env(env)
    LivenessSettings.from_env(env)
    for key in ("BWS_LIVENESS_ADDRESS", "BWS_ENROLL_ADDRESS", "BWS_S3_ENDPOINT", "BWS_S3_BUCKET"):
        assert env[key] == gateway_env[key], key
    assert admin.liveness_address == f"{LIVENESS}:{GRPC_PORTS[LIVENESS]}"
    assert admin.enroll_address == f"{ENROLL}:{GRPC_PORTS[ENROLL]}"
    http = {p["name"]: p["port"] for p in find(docs, "Service", GATEWAY)["spec"]["ports"]}["http"]
    assert (admin.host, admin.port) == (GATEWAY, http)


def test_the_admin_manifest_tells_how_to_run_it_with_real_names(docs: list[dict[str, Any]]) -> None:
    header = "\n".join(
        line for line in (K8S / "admin.yaml").read_text().splitlines() if line.startswith("#")
    )
    assert f"kubectl -n {NAMESPACE} create job --from=cronjob/{ADMIN} " in header
    execs = re.findall(r"kubectl -n (\S+) exec (?:-i )?deploy/(\S+) -- bws-admin", header)
    assert {name for _, name in execs} == {GATEWAY, ENROLL}
    for namespace, name in execs:
        assert namespace == NAMESPACE
        find(docs, "Deployment", name)


# ------------------------------------------------------------------------------------------
# Autoscaling and storage
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [LIVENESS, ENROLL])
def test_cpu_bound_services_scale_on_cpu_utilization(docs: list[dict[str, Any]], name: str) -> None:
    hpa = find(docs, "HorizontalPodAutoscaler", name)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    deployment = find(docs, "Deployment", name)
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert "cpu" in only_container(deployment)["resources"]["requests"], "utilization is relative to the request"


def test_minio_is_a_statefulset_with_a_volume_claim_and_secret_credentials(docs: list[dict[str, Any]]) -> None:
    minio = find(docs, "StatefulSet", MINIO)
    [claim] = minio["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    container = only_container(minio)
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    env = {v["name"]: v for v in container["env"]}
    for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "minio-credentials", "key": key}
    service = find(docs, "Service", minio["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None", "the StatefulSet's governing Service is headless"
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("s3", 9000)]


# ------------------------------------------------------------------------------------------
# Secrets: referenced by name, generated from git-ignored files, never written in the repo
# ------------------------------------------------------------------------------------------


def test_every_secret_and_config_reference_resolves(docs: list[dict[str, Any]]) -> None:
    for doc in workloads(docs):
        for container in all_containers(doc):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secret = find(docs, "Secret", ref["name"])
                    assert ref["key"] in secret["data"], f"{ref['name']} has no key {ref['key']}"
            for source in container.get("envFrom", []):
                find(docs, "ConfigMap", source["configMapRef"]["name"])


def test_no_credentials_are_written_in_the_manifests(docs: list[dict[str, Any]]) -> None:
    for resource in kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text()):
            if doc:
                assert doc["kind"] != "Secret", f"{resource}: Secrets come from the secretGenerator only"
    for doc in workloads(docs):
        for container in all_containers(doc):
            for var in container.get("env", []):
                if SECRET_NAME.search(var["name"]):
                    assert "value" not in var, f"{var['name']} must come from a Secret"
    config = read_env_file(K8S / "config.env")
    assert not [k for k in config if SECRET_NAME.search(k)], "config.env is not for secrets"


def test_secret_env_files_are_git_ignored_and_only_examples_are_committed() -> None:
    ignored = [
        line.strip() for line in (DEPLOY / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def is_ignored(relative_to_deploy: str) -> bool:
        return any(fnmatch.fnmatch("/" + relative_to_deploy, pattern) for pattern in ignored)

    envs = [env for gen in kustomization()["secretGenerator"] for env in gen["envs"]]
    assert envs
    for env in envs:
        assert is_ignored(f"k8s/{env}"), f"deploy/k8s/{env} must be git-ignored"
        example = secret_env_example(env)
        assert not is_ignored(str(example.relative_to(DEPLOY)))
        for key, value in read_env_file(example).items():
            assert "change-me" in value, f"{example.name}: {key} must be a placeholder"
    assert is_ignored(".env")
    for key, value in read_env_file(DEPLOY / "compose.env.example").items():
        if SECRET_NAME.search(key):
            assert "change-me" in value, f"compose.env.example: {key} must be a placeholder"


def test_placeholder_secrets_are_rejected_by_the_processes() -> None:
    """Forgetting to replace an example value stops the process: no demo credential stays enabled."""
    from bws.settings import SettingsError, parse_apps

    gateway_example = read_env_file(secret_env_example("secrets/gateway.env"))
    with pytest.raises(SettingsError):
        parse_apps(gateway_example["BWS_APPS"])
    enroll_env = {"BWS_S3_ENDPOINT": "x:1", "BWS_S3_ACCESS_KEY": "a", "BWS_S3_SECRET_KEY": "b",
                  **read_env_file(secret_env_example("secrets/enroll.env"))}
    with pytest.raises(SettingsError):
        EnrollSettings.from_env(enroll_env)
    gateway_env = {**enroll_env, **gateway_example,
                   "BWS_APPS": DUMMY_SECRETS["BWS_APPS"]}
    with pytest.raises(SettingsError):
        GatewaySettings.from_env(gateway_env)  # the example BWS_TOKEN_SECRET is too short


# ------------------------------------------------------------------------------------------
# Compose
# ------------------------------------------------------------------------------------------


def test_compose_file_has_the_four_services_and_publishes_only_the_gateway_on_loopback() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {MINIO, LIVENESS, ENROLL, GATEWAY}
    assert services[GATEWAY]["ports"] == ["127.0.0.1:8080:8080", "127.0.0.1:9090:9090"]  # HTTP, BWS 3 gRPC
    for name in (MINIO, LIVENESS, ENROLL):
        assert "ports" not in services[name]
    for name, process in PROCESSES.items():
        build = services[name]["build"]
        assert build["dockerfile"] == f"deploy/docker/{process}.Dockerfile"
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve().is_file()
        assert services[name]["image"] == f"{IMAGES[name]}:0.1.0"
        assert services[name]["user"] == "10001:10001"
    for service in services.values():
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]


def test_compose_has_no_default_credentials() -> None:
    text = COMPOSE.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    references = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}", code)
    assert references
    for name, modifier in references:
        assert modifier.startswith(":?"), f"${{{name}}} must be required (:?), with no default"
    compose = yaml.safe_load(text)
    for service_name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", str(value)), f"{service_name}: {key} is literal"
    example = read_env_file(DEPLOY / "compose.env.example")
    assert {name for name, _ in references} <= set(example), "compose.env.example must list every variable"


def test_compose_gives_each_process_a_complete_valid_configuration() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())

    def environment(name: str) -> dict[str, str]:
        out = {}
        for key, value in compose["services"][name]["environment"].items():
            match = re.fullmatch(r"\$\{([A-Z0-9_]+):\?[^}]*\}", str(value))
            if match:
                out[key] = DUMMY_SECRETS.get(match.group(1), "http://127.0.0.1:8080")
            else:
                out[key] = str(value)
        return out

    gateway = GatewaySettings.from_env(environment(GATEWAY))
    assert (gateway.host, gateway.port) == ("0.0.0.0", 8080)
    assert gateway.liveness_address == f"{LIVENESS}:{GRPC_PORTS[LIVENESS]}"
    assert gateway.enroll_address == f"{ENROLL}:{GRPC_PORTS[ENROLL]}"
    assert LivenessSettings.from_env(environment(LIVENESS)).listen == f"0.0.0.0:{GRPC_PORTS[LIVENESS]}"
    assert EnrollSettings.from_env(environment(ENROLL)).listen == f"0.0.0.0:{GRPC_PORTS[ENROLL]}"


# ------------------------------------------------------------------------------------------
# Dockerfiles (read, not built: there is no Docker engine here)
# ------------------------------------------------------------------------------------------


def dockerfile(process: str) -> str:
    return (DOCKER / f"{process}.Dockerfile").read_text()


def stages(text: str) -> list[str]:
    """The instructions of each stage (from its FROM up to the next FROM), comments dropped."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    parts = re.split(r"(?m)^(?=FROM )", body)
    return [part.strip() for part in parts if part.startswith("FROM ")]


@pytest.mark.parametrize("process", sorted(PROCESSES.values()))
def test_dockerfile_is_multi_stage_slim_and_non_root(process: str) -> None:
    text = dockerfile(process)
    assert re.search(r"(?m)^ARG PYTHON_IMAGE=python:3\.11-slim", text)
    build, runtime = stages(text)
    assert build.startswith("FROM ${PYTHON_IMAGE} AS build")
    assert runtime.startswith("FROM ${PYTHON_IMAGE} AS runtime")
    # Installed from the one lock file, every package with its hashes; no dev tools in the image.
    assert "uv export --frozen --no-dev" in build and "pip install --no-deps --require-hashes" in build
    assert "grpc_tools.protoc -Iprotos" in build and "protos/bws/v1/*.proto" in build
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime
    users = re.findall(r"(?m)^USER (\S+)", runtime)
    assert users == ["10001:10001"]
    assert runtime.rstrip().splitlines()[-1] == f'ENTRYPOINT ["python", "-m", "{process}"]'
    assert f"COPY --from=build /src/{process} {process}/" in runtime
    assert "COPY --from=build /src/bws bws/" in runtime


def test_the_build_stage_is_identical_in_all_dockerfiles_so_its_cache_is_shared() -> None:
    builds = {stages(dockerfile(p))[0] for p in PROCESSES.values()}
    assert len(builds) == 1


def test_dockerignore_files_are_identical_and_let_through_what_the_build_copies() -> None:
    ignores = {(DOCKER / f"{p}.Dockerfile.dockerignore").read_text() for p in PROCESSES.values()}
    assert len(ignores) == 1
    patterns = [line.strip() for line in ignores.pop().splitlines() if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "an allow-list: everything is excluded first"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    build = stages(dockerfile("gateway"))[0]
    sources = [
        src.rstrip("/")
        for line in build.splitlines() if line.startswith("COPY ") and "--from" not in line
        for src in line.split()[1:-1]
    ]
    assert sources
    for src in sources:
        assert src in allowed, f"{src} is copied but excluded by the .dockerignore"
        assert (ROOT / src).exists(), f"{src} does not exist in the repository"
    for generated in ("bws/*/*_pb2.py", "bws/*/*_pb2_grpc.py"):  # bws/v1 and bws/bws3
        assert generated in patterns, "generated code is rebuilt in the image, never copied"


def test_the_liveness_image_has_the_libraries_mediapipe_links() -> None:
    runtime = stages(dockerfile("liveness_service"))[1]
    assert "libegl1" in runtime and "libgles2" in runtime


ADMIN_WRAPPER = "/opt/venv/bin/bws-admin"


def instructions(stage: str) -> list[str]:
    """A stage's instructions, one string each (continuation lines joined)."""
    return [line.strip() for line in re.sub(r"\\\n", " ", stage).splitlines() if line.strip()]


def admin_wrapper_script(process: str) -> str:
    """The bws-admin script the runtime stage writes (its printf run here, as the build runs it)."""
    [install] = [i for i in instructions(stages(dockerfile(process))[1]) if f"> {ADMIN_WRAPPER}" in i]
    match = re.search(r"printf '([^'%]*)' > " + re.escape(ADMIN_WRAPPER), install)
    assert match, "write the wrapper with one printf of a single-quoted string"
    return subprocess.run(["printf", match.group(1)], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("process", sorted(PROCESSES.values()))
def test_the_runtime_stage_puts_bws_admin_on_path_and_checks_it_at_build_time(process: str) -> None:
    """`kubectl exec deploy/<name> -- bws-admin ...` works in every image, and an image where it
    does not is never pushed."""
    steps = instructions(stages(dockerfile(process))[1])

    def index(predicate: Any) -> int:
        [found] = [n for n, step in enumerate(steps) if predicate(step)]
        return found

    path = index(lambda s: s.startswith("ENV PATH="))
    assert steps[path].startswith("ENV PATH=/opt/venv/bin:")
    venv = index(lambda s: s == "COPY --from=build /opt/venv /opt/venv")
    install = index(lambda s: s.startswith("RUN ") and f"> {ADMIN_WRAPPER}" in s)
    check = index(lambda s: s.startswith("RUN ") and "bws-admin --help" in s)
    code = index(lambda s: s.startswith(f"COPY --from=build /src/{process} "))
    user = index(lambda s: s.startswith("USER "))
    assert venv < install < user, "written as root, after the venv it lives in"
    assert code < check < user, "checked once the code is in, as root (nothing left behind for the user)"
    # Root's file, executable by all, writable by nobody else (no chown, no group/other write).
    assert f"chmod 0755 {ADMIN_WRAPPER}" in steps[install] and "chown" not in steps[install]
    assert re.search(r"bws-admin --help(?! \|\|)", steps[check]), "a failing --help must fail the build"
    script = admin_wrapper_script(process)
    assert script.startswith("#!/bin/sh\n")
    assert 'exec /opt/venv/bin/python -m bws.admin "$@"' in script
    assert "PYTHONPATH=/app " in script, "the code is in /app: bws-admin must work from any directory"


def test_the_images_bws_admin_is_make_installs_wrapper_and_the_same_everywhere() -> None:
    scripts = {admin_wrapper_script(p) for p in PROCESSES.values()}
    assert len(scripts) == 1
    makefile = (ROOT / "Makefile").read_text()
    assert "-m bws.admin" in makefile and '-m bws.admin "$$@"' in makefile


def test_the_images_bws_admin_wrapper_runs_the_tool_from_any_directory(tmp_path: Path) -> None:
    """The image's script, pointed at this checkout and this venv, starts bws-admin from a
    directory that holds no code."""
    script = admin_wrapper_script("enroll_service")
    local = script.replace("/opt/venv/bin/python", sys.executable).replace("PYTHONPATH=/app ", f"PYTHONPATH={ROOT} ")
    assert sys.executable in local and str(ROOT) in local
    wrapper = tmp_path / "bws-admin"
    wrapper.write_text(local)
    wrapper.chmod(0o755)
    result = subprocess.run([str(wrapper), "doctor", "--help"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Usage: bws-admin doctor" in result.stdout


# ------------------------------------------------------------------------------------------
# The container health check script (deploy/docker/healthcheck.py)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("bws_container_healthcheck", DOCKER / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None).wait()


def test_healthcheck_grpc_is_healthy_only_when_the_service_is_serving(
    healthcheck: Any, health_server: tuple[str, health.HealthServicer]
) -> None:
    address, servicer = health_server
    servicer.set("readiness", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main(["grpc", address, "readiness"]) == 1
    servicer.set("readiness", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main(["grpc", address, "readiness"]) == 0
    assert healthcheck.main(["grpc", address, "unknown-service"]) == 1


def test_healthcheck_grpc_is_unhealthy_when_nothing_listens(
    healthcheck: Any, health_server: tuple[str, health.HealthServicer]
) -> None:
    address, _ = health_server
    closed = address.rsplit(":", 1)[0] + ":1"
    assert healthcheck.main(["grpc", closed, "readiness"]) == 1


def test_healthcheck_http_follows_the_status_code(healthcheck: Any) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200 if self.path == "/readyz" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert healthcheck.main(["http", f"{base}/readyz"]) == 0
        assert healthcheck.main(["http", f"{base}/not-ready"]) == 1
    finally:
        server.shutdown()
        server.server_close()
    assert healthcheck.main(["http", f"{base}/readyz"]) == 1
    assert healthcheck.main(["bogus"]) == 2


def test_every_package_is_locked_with_hashes_and_installed_from_the_lock() -> None:
    """uv.lock pins every package the project's dependencies need, each with its hashes; the
    Makefile installs from it without resolving (`uv sync --frozen`)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = [p for p in lock["package"] if p.get("source", {}).get("registry")]
    assert len(packages) > 50
    for package in packages:
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files and all(f.get("hash", "").startswith("sha256:") for f in files), package["name"]
    names = {p["name"] for p in packages}
    assert {"urllib3", "yarl", "multidict", "cffi"} <= names  # transitive ones too
    assert "uv sync --frozen" in (ROOT / "Makefile").read_text()
