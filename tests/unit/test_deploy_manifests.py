"""The deploy manifests (deploy/): valid Kubernetes objects that keep the promises of deploy/README.md.

Offline and fast: no cluster, no kustomize binary, no Docker engine. The kustomization and
its overlays (deploy/k8s/overlays/*) are rendered here in Python (resources, a base, generators,
strategic-merge patches, namespace, labels and images; any other kustomize feature makes
``test_kustomization_uses_only_what_this_renderer_understands`` fail, so the renderer cannot
silently drift from ``kubectl apply -k``). Every rendered object is then checked against the
strict Kubernetes JSON schemas bundled in ``kubernetes-validate`` (unknown fields are errors),
for the oldest and the newest Kubernetes version we support. The tests that take ``docs`` hold
for the base and for every overlay.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import functools
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
OVERLAYS = K8S / "overlays"
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
    "configMapGenerator", "secretGenerator", "images", "patches",
}
# What `kubectl apply -k` is given: the base and each overlay on it.
VARIANTS = {
    "base": K8S,
    "minio-distributed": OVERLAYS / "minio-distributed",  # MinIO erasure-coded over 4 nodes
    "external-s3": OVERLAYS / "external-s3",  # no MinIO: an S3 service outside the cluster
}
IN_CLUSTER_MINIO = ("base", "minio-distributed")
# Strategic merge as Kubernetes declares it for the fields the overlays patch: these lists merge
# item by item on a key (patchMergeKey), these are replaced whole. A patch that reaches any
# other list fails the render: teach it here, from the API reference, before using it.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
    "volumeMounts": "mountPath", "topologySpreadConstraints": "topologyKey",
}
REPLACED_LISTS = {"args", "command"}
# Names of variables that hold credentials (for the "no literal secret" checks).
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|ACCESS_KEY|TOKEN|TEMPLATE_KEY|ROOT_USER|BWS_APPS)", re.I)

# Valid stand-ins for the secret values, to build each process's settings from the manifests.
DUMMY_SECRETS = {
    "MINIO_ROOT_USER": "dummy-user",
    "MINIO_ROOT_PASSWORD": "dummy-password-1234",
    "BWS_APPS": json.dumps([{"id": "app", "secret": "s" * 24, "storage": "bws"}]),
    "BWS_TOKEN_SECRET": "t" * 48,
    "BWS_TEMPLATE_KEY": base64.b64encode(bytes(32)).decode(),
    "BWS_S3_ACCESS_KEY": "dummy-access-key",  # the external-s3 overlay's s3-credentials
    "BWS_S3_SECRET_KEY": "dummy-secret-key-1234",
}


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------


def kustomization(root: Path = K8S) -> dict[str, Any]:
    return yaml.safe_load((root / "kustomization.yaml").read_text())


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


def secret_env_example(path: str, root: Path = K8S) -> Path:
    """The committed example of a (git-ignored) secret env file of the kustomization in `root`."""
    return root / (path + ".example")


def yaml_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def base_of(root: Path, resource: str) -> Path | None:
    """The kustomization a `resources` entry names (a directory), or None for a file."""
    path = (root / resource).resolve()
    return path if path.is_dir() else None


def kustomization_roots(root: Path) -> list[Path]:
    """The kustomization in `root` and the bases it builds on (their directories)."""
    bases = [base for resource in kustomization(root)["resources"] if (base := base_of(root, resource))]
    return [root, *(r for base in bases for r in kustomization_roots(base))]


def patch_documents(root: Path) -> list[dict[str, Any]]:
    """The strategic-merge patches of the kustomization in `root`, in order: one document each
    (the kustomize of older kubectl versions takes no more in one `patches` entry)."""
    patches = []
    for entry in kustomization(root).get("patches", []):
        assert set(entry) in ({"path"}, {"patch"}), f"{root.name}: patches need a path or an inline patch, no target"
        text = (root / entry["path"]).read_text() if "path" in entry else entry["patch"]
        found = yaml_documents(text)
        assert len(found) == 1, f"{root.name}: {entry.get('path', 'an inline patch')} must hold exactly one patch"
        patches.append(found[0])
    return patches


def strategic_merge(target: dict[str, Any], patch: dict[str, Any], where: str) -> None:
    """Merge `patch` into `target` as kustomize's strategic merge does, for what MERGE_KEYS and
    REPLACED_LISTS describe: maps merge key by key, null removes a key, scalars replace."""
    for key, value in patch.items():
        at = f"{where}.{key}"
        assert not key.startswith("$"), f"{at}: only a whole object's `$patch: delete` is rendered here"
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            strategic_merge(target[key], value, at)
        elif isinstance(value, list):
            if key in REPLACED_LISTS:
                target[key] = copy.deepcopy(value)
                continue
            assert key in MERGE_KEYS, f"{at}: how this list merges is not known here (add it to MERGE_KEYS)"
            merge_key, merged = MERGE_KEYS[key], target.setdefault(key, [])
            for item in value:
                assert isinstance(item, dict) and merge_key in item, f"{at}: every item needs its {merge_key}"
                same = [existing for existing in merged if existing.get(merge_key) == item[merge_key]]
                if not same:
                    merged.append({})
                    same = merged[-1:]
                strategic_merge(same[0], item, f"{at}[{item[merge_key]}]")
        else:
            target[key] = value


def apply_patch(docs: list[dict[str, Any]], patch: dict[str, Any]) -> None:
    """A strategic-merge patch applied to the one object of its kind and name (kustomize's
    `patches` without a target): merged into it, or, with `$patch: delete`, removing it."""
    kind, name = patch["kind"], patch["metadata"]["name"]
    targets = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(targets) == 1, f"the patch of {kind} {name} must find exactly one object, found {len(targets)}"
    [target] = targets
    assert patch["apiVersion"] == target["apiVersion"], f"the patch of {kind} {name}: another apiVersion"
    assert patch["metadata"].get("namespace", target["metadata"].get("namespace")) == target["metadata"].get(
        "namespace"), f"the patch of {kind} {name}: another namespace"
    if "$patch" in patch:
        assert patch["$patch"] == "delete", f"{kind} {name}: only `$patch: delete` is rendered here"
        assert set(patch) == {"$patch", "apiVersion", "kind", "metadata"} and set(patch["metadata"]) == {"name"}
        docs.remove(target)
        return
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
    body["metadata"] = {k: v for k, v in patch["metadata"].items() if k not in ("name", "namespace")}
    strategic_merge(target, body, f"{kind}/{name}")


def generate(docs: list[dict[str, Any]], kind: str, gen: dict[str, Any], data: dict[str, str]) -> None:
    """A generator's object: a new one, or (behavior: merge) its data merged into the base's."""
    existing = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == gen["name"]]
    if gen.get("behavior", "create") == "merge":
        assert len(existing) == 1, f"{kind} {gen['name']}: behavior merge needs one in a base"
        existing[0]["data"].update(data)
        return
    assert not existing, f"{kind} {gen['name']} exists already: kustomize refuses to create it again"
    doc = {"apiVersion": "v1", "kind": kind, "metadata": {"name": gen["name"]}, "data": data}
    if kind == "Secret":
        doc["type"] = "Opaque"
    docs.append(doc)


def render(root: Path = K8S) -> list[dict[str, Any]]:
    """What `kubectl apply -k <root>` sends, minus the generators' hash suffixes.

    Secrets are generated from the committed ``*.env.example`` files, never from real ones. In
    kustomize's order: resources (a base rendered first, as a whole), generators, patches, then
    namespace, labels and images over everything.
    """
    kust = kustomization(root)
    docs: list[dict[str, Any]] = []
    for resource in kust["resources"]:
        base = base_of(root, resource)
        if base is not None:
            docs.extend(render(base))
            continue
        path = root / resource
        assert path.is_file(), f"{root.name}/kustomization.yaml lists {resource}, which is not a file there"
        docs.extend(yaml_documents(path.read_text()))
    for gen in kust.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env in gen.get("envs", []):
            data.update(read_env_file(root / env))
        generate(docs, "ConfigMap", gen, data)
    for gen in kust.get("secretGenerator", []):
        data = {}
        for env in gen.get("envs", []):
            data.update(read_env_file(secret_env_example(env, root)))
        generate(docs, "Secret", gen, {k: base64.b64encode(v.encode()).decode() for k, v in data.items()})
    for patch in patch_documents(root):
        apply_patch(docs, patch)
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


@functools.cache
def rendered(variant: str) -> list[dict[str, Any]]:
    """The objects of one variant, rendered once (tests read them; the ones that change an
    object change a copy)."""
    return render(VARIANTS[variant])


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


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def docs(variant: str) -> list[dict[str, Any]]:
    """The base's objects, then each overlay's: what a test checks with it holds for all."""
    return rendered(variant)


@pytest.fixture(scope="module")
def base_docs() -> list[dict[str, Any]]:
    return rendered("base")


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


@pytest.mark.parametrize("root", VARIANTS.values(), ids=list(VARIANTS))
def test_kustomization_uses_only_what_this_renderer_understands(root: Path) -> None:
    kust = kustomization(root)
    assert set(kust) <= RENDERER_KEYS, f"teach render() about {set(kust) - RENDERER_KEYS}"
    assert kust["namespace"] == NAMESPACE
    for gen in [*kust.get("configMapGenerator", []), *kust.get("secretGenerator", [])]:
        assert set(gen) <= {"name", "envs", "behavior"}, f"generator {gen['name']}: only `envs` is rendered here"
        assert gen.get("behavior", "create") in ("create", "merge"), f"generator {gen['name']}: behavior"
    for entry in kust.get("labels", []):
        assert not entry.get("includeSelectors"), "selectors are written in each file, not by kustomize"
    for resource in kust["resources"]:
        base = base_of(root, resource)
        if base is None:
            assert (root / resource).is_file() and "/" not in resource
        else:
            assert root != K8S and base == K8S, "an overlay builds on the base, and on nothing else"
    patch_documents(root)  # one document per patch, no targets
    render(root)  # anything else it meets (a list it cannot merge, a directive) fails here


def test_every_overlay_is_rendered_here() -> None:
    present = {path.parent for path in OVERLAYS.glob("*/kustomization.yaml")}
    assert present == set(VARIANTS.values()) - {K8S}, "add a new overlay to VARIANTS"


@pytest.mark.parametrize("root", VARIANTS.values(), ids=list(VARIANTS))
def test_every_yaml_file_of_a_kustomization_is_a_resource_or_a_patch(root: Path) -> None:
    kust = kustomization(root)
    listed = {r for r in kust["resources"] if base_of(root, r) is None}
    listed |= {entry["path"] for entry in kust.get("patches", []) if "path" in entry}
    present = {p.name for p in root.glob("*.yaml")} - {"kustomization.yaml"}
    assert present == listed


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        ({"spec": {"ports": [{"port": 1}]}}, "how this list merges is not known here"),
        ({"spec": {"selector": {"$patch": "replace"}}}, "only a whole object's `$patch: delete`"),
        ({"$patch": "replace"}, "only `$patch: delete`"),
        ({"metadata": {"name": "nobody"}}, "must find exactly one object"),
        ({"apiVersion": "v2"}, "another apiVersion"),
    ],
)
def test_the_renderer_refuses_patches_it_cannot_render_like_kustomize(
    base_docs: list[dict[str, Any]], patch: dict[str, Any], error: str
) -> None:
    docs = copy.deepcopy(base_docs)
    full = {"apiVersion": "v1", "kind": "Service", **patch, "metadata": {"name": MINIO, **patch.get("metadata", {})}}
    with pytest.raises(AssertionError, match=re.escape(error)):
        apply_patch(docs, full)


def test_the_renderer_merges_lists_by_their_kubernetes_merge_key(base_docs: list[dict[str, Any]]) -> None:
    docs = copy.deepcopy(base_docs)
    apply_patch(docs, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": GATEWAY},
        "spec": {"replicas": None, "template": {"spec": {"containers": [{
            "name": GATEWAY, "args": ["--x"],
            "env": [{"name": "BWS_HTTP_PORT", "value": "8081"}, {"name": "NEW", "value": "1"}],
        }]}}},
    })
    gateway, before = find(docs, "Deployment", GATEWAY), only_container(find(base_docs, "Deployment", GATEWAY))
    assert "replicas" not in gateway["spec"]  # null removes
    container = only_container(gateway)  # merged into the container of that name, not added
    env = {v["name"]: v for v in container["env"]}
    assert env["BWS_HTTP_PORT"] == {"name": "BWS_HTTP_PORT", "value": "8081"}  # merged by name
    assert container["env"][-1]["name"] == "NEW" and len(env) == len(before["env"]) + 1  # appended
    assert container["args"] == ["--x"] and container["image"] == before["image"]
    delete = {"$patch": "delete", "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": GATEWAY}}
    apply_patch(docs, delete)
    assert not [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == GATEWAY]


def test_rendered_objects_are_the_expected_set(docs: list[dict[str, Any]], variant: str) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name in (GATEWAY, LIVENESS, ENROLL):
        assert {("Deployment", name), ("Service", name), ("ServiceAccount", name)} <= kinds
    minio = {("StatefulSet", MINIO), ("Service", MINIO), ("ServiceAccount", MINIO)}
    if variant in IN_CLUSTER_MINIO:
        assert minio <= kinds
    else:
        assert not minio & kinds
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
def test_strict_validation_rejects_a_broken_deployment(base_docs: list[dict[str, Any]], breakage: str) -> None:
    broken = copy.deepcopy(find(base_docs, "Deployment", GATEWAY))
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
    for budget in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        selector = budget["spec"]["selector"]
        selected = [w["metadata"]["name"] for w in workloads(docs) if selects(selector, pod_labels(w))]
        assert selected == [budget["metadata"]["name"]], f"PodDisruptionBudget {budget['metadata']['name']}"


def test_each_process_gets_a_complete_valid_configuration(docs: list[dict[str, Any]]) -> None:
    gateway = GatewaySettings.from_env(container_env(find(docs, "Deployment", GATEWAY), docs))
    assert (gateway.host, gateway.port) == ("0.0.0.0", 8080)
    assert gateway.liveness_address == f"{LIVENESS}:{GRPC_PORTS[LIVENESS]}"
    assert gateway.enroll_address == f"{ENROLL}:{GRPC_PORTS[ENROLL]}"
    liveness = LivenessSettings.from_env(container_env(find(docs, "Deployment", LIVENESS), docs))
    assert liveness.listen == f"0.0.0.0:{GRPC_PORTS[LIVENESS]}"
    enroll = EnrollSettings.from_env(container_env(find(docs, "Deployment", ENROLL), docs))
    assert enroll.listen == f"0.0.0.0:{GRPC_PORTS[ENROLL]}"
    # One store for all (where it is: test_the_processes_store_in_*).
    assert gateway.storage == liveness.storage == enroll.storage
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


def promised_paths(variant: str) -> dict[tuple[str, int], set[str]]:
    """Who may open a connection to which workload's port (deploy/README.md, "Network")."""
    everyone = {GATEWAY, LIVENESS, ENROLL, ADMIN, OUTSIDE} | ({MINIO} if variant in IN_CLUSTER_MINIO else set())
    paths = {
        (GATEWAY, 8080): everyone,
        (GATEWAY, 9090): everyone,
        (LIVENESS, 50051): {GATEWAY, ADMIN},
        (ENROLL, 50052): {GATEWAY, ADMIN},
    }
    if variant in IN_CLUSTER_MINIO:
        # Distributed, the MinIO pods also reach each other: drives, locks, peer calls.
        peers = {MINIO} if variant == "minio-distributed" else set()
        paths[(MINIO, 9000)] = {GATEWAY, LIVENESS, ENROLL, ADMIN} | peers
    return paths


def test_network_policies_allow_exactly_the_promised_paths(docs: list[dict[str, Any]], variant: str) -> None:
    for (target, port), sources in promised_paths(variant).items():
        assert allowed_sources(docs, target, port) == sources, f"{target}:{port}"


def test_network_policies_deny_other_ports(docs: list[dict[str, Any]], variant: str) -> None:
    closed = [(GATEWAY, 9000), (LIVENESS, 50052), (ENROLL, 50051)]
    if variant in IN_CLUSTER_MINIO:
        closed.append((MINIO, 9001))
    for target, port in closed:
        assert allowed_sources(docs, target, port) == set(), f"{target}:{port}"


def test_network_policies_let_the_admin_job_reach_what_its_doctor_checks(
    docs: list[dict[str, Any]], variant: str
) -> None:
    """The services' gRPC health, the store and the gateway's /readyz. Its own pod listens on
    nothing, so no policy admits anyone to it. An external store is outside the namespace, where
    the policies (ingress only) do not reach."""
    checked = [(LIVENESS, GRPC_PORTS[LIVENESS]), (ENROLL, GRPC_PORTS[ENROLL]), (GATEWAY, 8080)]
    if variant in IN_CLUSTER_MINIO:
        checked.append((MINIO, 9000))
    for target, port in checked:
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


@pytest.mark.parametrize("variant", IN_CLUSTER_MINIO)
def test_minio_is_a_statefulset_with_a_volume_claim_and_secret_credentials(variant: str) -> None:
    docs = rendered(variant)
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


def store_users(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each process's storage settings, and the bws-admin Job's, as they load from the manifests."""
    return {
        GATEWAY: GatewaySettings.from_env(container_env(find(docs, "Deployment", GATEWAY), docs)).storage,
        LIVENESS: LivenessSettings.from_env(container_env(find(docs, "Deployment", LIVENESS), docs)).storage,
        ENROLL: EnrollSettings.from_env(container_env(find(docs, "Deployment", ENROLL), docs)).storage,
        ADMIN: GatewaySettings.from_env(container_env(find(docs, "CronJob", ADMIN), docs)).storage,
    }


@pytest.mark.parametrize("variant", IN_CLUSTER_MINIO)
def test_the_processes_store_in_the_in_cluster_minio(variant: str) -> None:
    """BWS_S3_ENDPOINT names a Service of the namespace that sends to the MinIO pods' S3 port,
    and only to ready pods (a MinIO pod that is not ready cannot serve yet)."""
    docs = rendered(variant)
    minio = find(docs, "StatefulSet", MINIO)
    s3_port = {p["name"]: p["containerPort"] for p in only_container(minio)["ports"]}["s3"]
    for user, storage in store_users(docs).items():
        host, _, port = storage.endpoint.partition(":")
        service = find(docs, "Service", host)
        assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(minio)), user
        assert not service["spec"].get("publishNotReadyAddresses"), f"{user}: clients need ready pods"
        [target] = [p["targetPort"] for p in service["spec"]["ports"] if p["port"] == int(port)]
        assert target in ("s3", s3_port), user
        assert storage.secure is False  # inside the namespace, plain HTTP (behind the network policies)


# ------------------------------------------------------------------------------------------
# The minio-distributed overlay: MinIO erasure-coded over several nodes
# ------------------------------------------------------------------------------------------


def expand_ellipses(pattern: str) -> list[str]:
    """MinIO's `{a...b}` expansion of a server argument (decimal ranges, as used here)."""
    match = re.search(r"\{(\d+)\.\.\.(\d+)\}", pattern)
    if not match:
        return [pattern]
    low, high = int(match.group(1)), int(match.group(2))
    assert low <= high, pattern
    return [
        expanded
        for n in range(low, high + 1)
        for expanded in expand_ellipses(pattern[:match.start()] + str(n) + pattern[match.end():])
    ]


def test_expand_ellipses_is_minios_expansion() -> None:
    assert expand_ellipses("http://m-{0...1}.x/d{1...2}") == [
        "http://m-0.x/d1", "http://m-0.x/d2", "http://m-1.x/d1", "http://m-1.x/d2"]
    assert expand_ellipses("/data") == ["/data"]


@pytest.fixture(scope="module")
def distributed() -> list[dict[str, Any]]:
    return rendered("minio-distributed")


def erasure_set(minio: dict[str, Any]) -> tuple[int, int, int]:
    """(drives in the set, drives per pod, parity) of a distributed MinIO StatefulSet."""
    per_pod = len(minio["spec"]["volumeClaimTemplates"])
    env = {v["name"]: v.get("value") for v in only_container(minio)["env"]}
    match = re.fullmatch(r"EC:(\d+)", env["MINIO_STORAGE_CLASS_STANDARD"] or "")
    assert match, "set the parity explicitly: the disruption budget depends on it"
    return minio["spec"]["replicas"] * per_pod, per_pod, int(match.group(1))


def test_distributed_minio_is_four_pods_or_more_started_together_each_with_its_drive(
    distributed: list[dict[str, Any]]
) -> None:
    minio = find(distributed, "StatefulSet", MINIO)
    assert minio["spec"]["replicas"] >= 4, "MinIO's smallest multi-node erasure set"
    assert minio["spec"]["podManagementPolicy"] == "Parallel", "each pod waits for its peers to be ready"
    claims = minio["spec"]["volumeClaimTemplates"]
    assert claims, "each pod has its own PersistentVolumeClaim"
    mounts = {m["name"]: m["mountPath"] for m in only_container(minio)["volumeMounts"]}
    for claim in claims:
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["resources"]["requests"]["storage"]
        assert claim["metadata"]["name"] in mounts
    volumes = {v["name"] for v in pod_spec(minio)["volumes"]}  # type: ignore[index]
    assert not volumes & {c["metadata"]["name"] for c in claims}, "a pod volume of a claim's name replaces the claim"


def test_distributed_minio_lists_every_pods_drive_by_its_stable_name(distributed: list[dict[str, Any]]) -> None:
    minio = find(distributed, "StatefulSet", MINIO)
    service = find(distributed, "Service", minio["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None", "pod DNS names come from a headless Service"
    assert service["spec"]["publishNotReadyAddresses"] is True, "peers resolve each other before they are ready"
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(minio))
    container = only_container(minio)
    args = container["args"]
    assert args[0] == "server"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["s3"]
    assert args[args.index("--address") + 1] == f":{port}"
    drives = [drive for arg in args[1:] if arg.startswith("http") for drive in expand_ellipses(arg)]
    name, namespace = minio["metadata"]["name"], minio["metadata"]["namespace"]
    claim_mounts = [m["mountPath"] for m in container["volumeMounts"]
                    if m["name"] in {c["metadata"]["name"] for c in minio["spec"]["volumeClaimTemplates"]}]
    expected = [
        f"http://{name}-{n}.{service['metadata']['name']}.{namespace}.svc.cluster.local:{port}{mount}"
        for n in range(minio["spec"]["replicas"]) for mount in claim_mounts
    ]
    assert sorted(drives) == sorted(expected), "one drive per claim of every pod, nothing else"


def test_distributed_minio_never_puts_two_drives_of_the_set_on_one_node(distributed: list[dict[str, Any]]) -> None:
    minio = find(distributed, "StatefulSet", MINIO)
    spread = {c["topologyKey"]: c for c in pod_spec(minio)["topologySpreadConstraints"]}  # type: ignore[index]
    others = [pod_labels(w) for w in workloads(distributed) if w is not minio]
    host = spread["kubernetes.io/hostname"]
    assert host["whenUnsatisfiable"] == "DoNotSchedule" and host["maxSkew"] == 1
    # With fewer nodes than pods, maxSkew alone lets a node take two: minDomains counts the
    # missing nodes as empty ones, so a second pod on a node always exceeds the skew.
    assert host.get("minDomains", 1) >= minio["spec"]["replicas"]
    for constraint in spread.values():
        assert selects(constraint["labelSelector"], pod_labels(minio))
        assert not any(selects(constraint["labelSelector"], labels) for labels in others)
    zone = spread.get("topology.kubernetes.io/zone")
    assert zone is None or zone["whenUnsatisfiable"] == "ScheduleAnyway", "a one-zone cluster must still schedule"


def test_distributed_minio_disruption_budget_keeps_write_quorum(distributed: list[dict[str, Any]]) -> None:
    """MinIO's quorum (its erasure coding documentation): reads need N - parity drives, writes
    as many, plus one when parity is N/2. A drain may take maxUnavailable pods at once."""
    minio = find(distributed, "StatefulSet", MINIO)
    budgets = [d for d in distributed if d["kind"] == "PodDisruptionBudget"
               and selects(d["spec"]["selector"], pod_labels(minio))]
    assert len(budgets) == 1
    [budget] = budgets
    assert budget["spec"] == {"maxUnavailable": 1, "selector": budget["spec"]["selector"]}
    assert not any(selects(budget["spec"]["selector"], pod_labels(w)) for w in workloads(distributed) if w is not minio)
    drives, per_pod, parity = erasure_set(minio)
    assert 2 <= parity <= drives // 2
    read_quorum = drives - parity
    write_quorum = drives - parity + (1 if 2 * parity == drives else 0)
    left = drives - budget["spec"]["maxUnavailable"] * per_pod
    assert left >= write_quorum, "a drain must not stop writes"
    assert left - 1 >= read_quorum, "reads survive a drive lost during a drain"


def args_without_drives(args: list[str]) -> list[str]:
    return [a for a in args if not (a.startswith("http") or a.startswith("/data"))]


def test_distributed_minio_keeps_the_base_minios_hardening_probes_and_credentials(
    base_docs: list[dict[str, Any]], distributed: list[dict[str, Any]]
) -> None:
    base, minio = find(base_docs, "StatefulSet", MINIO), find(distributed, "StatefulSet", MINIO)
    for key in ("securityContext", "serviceAccountName", "automountServiceAccountToken", "volumes",
                "terminationGracePeriodSeconds"):
        assert pod_spec(minio)[key] == pod_spec(base)[key], key  # type: ignore[index]
    container, base_container = only_container(minio), only_container(base)
    for key in ("image", "securityContext", "resources", "ports", "volumeMounts",
                "startupProbe", "livenessProbe", "readinessProbe"):
        assert container[key] == base_container[key], key
    assert all(var in container["env"] for var in base_container["env"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/minio/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/minio/health/ready"
    assert minio["spec"]["volumeClaimTemplates"] == base["spec"]["volumeClaimTemplates"]
    assert args_without_drives(container["args"]) == args_without_drives(base_container["args"])


def test_distributed_minios_clients_connect_through_a_virtual_ip(distributed: list[dict[str, Any]]) -> None:
    """kube-proxy spreads the processes' connections over the ready pods (any pod serves any
    object); the headless peer Service is not the clients'."""
    host = {storage.endpoint.partition(":")[0] for storage in store_users(distributed).values()}
    assert host == {MINIO}
    service = find(distributed, "Service", MINIO)
    assert service["spec"].get("clusterIP") != "None" and service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert find(distributed, "StatefulSet", MINIO)["spec"]["serviceName"] != MINIO


# ------------------------------------------------------------------------------------------
# The external-s3 overlay: no MinIO, an S3 service outside the cluster
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def external() -> list[dict[str, Any]]:
    return rendered("external-s3")


def test_external_s3_leaves_no_minio_behind(external: list[dict[str, Any]]) -> None:
    for doc in external:
        assert MINIO not in json.dumps(doc).lower(), f"{doc['kind']} {doc['metadata']['name']} mentions MinIO"
    policies = [d for d in external if d["kind"] == "NetworkPolicy"]
    assert policies and not [p for p in policies if MINIO in json.dumps(p).lower()], "no policy for MinIO's pods"


def test_external_s3_every_process_uses_the_configured_store_over_tls(external: list[dict[str, Any]]) -> None:
    config = read_env_file(VARIANTS["external-s3"] / "config.env")
    services = {d["metadata"]["name"] for d in external if d["kind"] == "Service"}
    for user, storage in store_users(external).items():
        assert storage.secure is True, user
        assert (storage.endpoint, storage.region, storage.bucket) == (
            config["BWS_S3_ENDPOINT"], config["BWS_S3_REGION"], config["BWS_S3_BUCKET"]), user
        assert storage.endpoint.partition(":")[0] not in services, f"{user}: the store is outside the cluster"
    for kind, name in (("Deployment", GATEWAY), ("Deployment", LIVENESS), ("Deployment", ENROLL), ("CronJob", ADMIN)):
        refs = secret_refs(find(external, kind, name))
        for key in ("BWS_S3_ACCESS_KEY", "BWS_S3_SECRET_KEY"):
            assert refs[key] == {"name": "s3-credentials", "key": key}, f"{name}: {key}"


def test_external_s3_header_says_what_the_store_must_support() -> None:
    """What bws/storage.py relies on, said where an operator chooses the store."""
    from bws.storage import AUDIT, INDEXES, TOKENS, UPLOADS

    header = "\n".join(line for line in (VARIANTS["external-s3"] / "kustomization.yaml").read_text().splitlines()
                       if line.startswith("#"))
    storage = (ROOT / "bws" / "storage.py").read_text()
    for needed in ("If-None-Match: *", "If-Match"):
        assert needed in header
    assert '"If-None-Match"' in storage and '"If-Match"' in storage, "the headers it sends"
    assert "set_bucket_lifecycle" in storage
    for prefix in (UPLOADS, TOKENS, INDEXES, AUDIT):
        assert prefix in header, f"the lifecycle rule on {prefix}"
    for store in ("AWS S3", "MinIO", "SeaweedFS"):
        assert store in header


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "base"])
def test_each_overlay_tells_how_to_apply_it(variant: str) -> None:
    command = f"kubectl apply -k {VARIANTS[variant].relative_to(ROOT)}"
    assert command in (VARIANTS[variant] / "kustomization.yaml").read_text()
    assert command in (DEPLOY / "README.md").read_text()


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


def test_no_credentials_are_written_in_the_manifests(docs: list[dict[str, Any]], variant: str) -> None:
    for root in kustomization_roots(VARIANTS[variant]):
        kust = kustomization(root)
        for resource in kust["resources"]:
            if base_of(root, resource) is None:
                for doc in yaml_documents((root / resource).read_text()):
                    assert doc["kind"] != "Secret", f"{resource}: Secrets come from the secretGenerator only"
        for patch in patch_documents(root):
            assert patch["kind"] != "Secret" or patch.get("$patch") == "delete", "a patch writes no Secret"
        for gen in kust.get("configMapGenerator", []):
            for env in gen["envs"]:
                config = read_env_file(root / env)
                assert not [k for k in config if SECRET_NAME.search(k)], f"{env} is not for secrets"
    for doc in workloads(docs):
        for container in all_containers(doc):
            for var in container.get("env", []):
                if SECRET_NAME.search(var["name"]):
                    assert "value" not in var, f"{var['name']} must come from a Secret"


def test_secret_env_files_are_git_ignored_and_only_examples_are_committed() -> None:
    ignored = [
        line.strip() for line in (DEPLOY / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def is_ignored(relative_to_deploy: str) -> bool:
        return any(fnmatch.fnmatch("/" + relative_to_deploy, pattern) for pattern in ignored)

    envs = [(root, env) for root in VARIANTS.values()
            for gen in kustomization(root).get("secretGenerator", []) for env in gen["envs"]]
    assert {root for root, _ in envs} == set(VARIANTS.values()) - {VARIANTS["minio-distributed"]}
    for root, env in envs:
        real = (root / env).relative_to(DEPLOY)
        assert is_ignored(str(real)), f"deploy/{real} must be git-ignored"
        example = secret_env_example(env, root)
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
