"""The Dockerfile and the Kubernetes manifests in deploy/kubernetes/ (docs/scale.md), checked by
parsing: there is no Docker daemon or cluster here. The image installs the lock with hashes and
runs as a non-root user; every manifest parses; the CronJob cannot overlap itself; every pod
runs restricted (non-root, read-only root file system, no capabilities, seccomp RuntimeDefault);
the ConfigMap's reaper.yaml and policies pass reaper's own validation. When the optional
`kubernetes-validate` package is installed, the manifests are also checked against the
Kubernetes schemas."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reaper.policy.config import build_config, check_config_semantics, load_policies
from reaper.policy.schema import check_schema, load_schema
from reaper.policy.yamlsrc import load_yaml_file

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = {"cronjob": "CronJob", "daemon": "Deployment"}


# -- the Dockerfile -----------------------------------------------------------------------------
def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        found.append((keyword.upper(), rest.strip()))
        pending = ""
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def image_uid() -> int:
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    return int(users[-1].split(":")[0])


def test_the_image_runs_as_a_non_root_user():
    stage = final_stage()
    users = [(i, args) for i, (keyword, args) in enumerate(stage) if keyword == "USER"]
    assert users, "no USER: the container would run as root"
    last_index, user = users[-1]
    name, _, group = user.partition(":")
    assert name.isdigit() and int(name) > 0, user  # numeric, so runAsNonRoot can check it
    assert not group or (group.isdigit() and int(group) > 0)
    # Nothing after the last USER switches back or runs a command as another user.
    assert all(keyword != "RUN" for keyword, _ in stage[last_index:])


def test_the_final_image_is_python_3_11_slim_and_starts_reaper():
    stage = final_stage()
    assert stage[0][1].split()[0] == "python:3.11-slim"
    entrypoint = [json.loads(args) for keyword, args in stage if keyword == "ENTRYPOINT"]
    assert entrypoint == [["reaper"]]
    cmd = [json.loads(args) for keyword, args in stage if keyword == "CMD"][-1]
    assert cmd[0] == "daemon"


def test_the_image_installs_the_lock_with_hashes_and_reaper_without_dependencies():
    pip_runs = [shlex.split(args) for keyword, args in instructions() if keyword == "RUN"]
    pip_runs = [cmd for cmd in pip_runs if any(part.endswith("/pip") for part in cmd)]
    lock = next(cmd for cmd in pip_runs if any(p.endswith("requirements.lock") for p in cmd))
    assert "--require-hashes" in lock and lock[lock.index("-r") + 1].endswith("requirements.lock")
    reaper = next(cmd for cmd in pip_runs if "/src" in cmd)
    assert "--no-deps" in reaper
    assert len(pip_runs) == 2  # nothing else is installed unlocked


def test_the_audit_log_lives_on_a_volume_and_bytecode_is_not_written_at_run_time():
    stage = final_stage()
    volumes = [json.loads(args) for keyword, args in stage if keyword == "VOLUME"]
    assert ["/var/lib/reaper"] in volumes
    env = " ".join(args for keyword, args in stage if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # a read-only root file system takes no .pyc
    audit_log = yaml.safe_load(config_map("reaper-config")["reaper.yaml"])["audit_log"]
    assert audit_log.startswith("/var/lib/reaper/")


def test_dockerignore_keeps_what_the_dockerfile_copies():
    """.dockerignore lets in only what COPY needs; a source it drops would break the build."""
    rules = (ROOT / ".dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    copies = [args.split() for keyword, args in instructions() if keyword == "COPY"]
    sources = {src for args in copies if not args[0].startswith("--from") for src in args[:-1]}
    assert sources and sources <= kept, sources - kept


# -- the manifests ------------------------------------------------------------------------------
def manifest_files() -> list[Path]:
    return sorted(KUBE.rglob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def overlay_objects(overlay: str) -> list[dict[str, Any]]:
    """The objects `kustomize build deploy/kubernetes/OVERLAY` starts from: the resources of
    its kustomization.yaml, following folders to their own kustomization.yaml."""

    def walk(folder: Path) -> Iterator[dict[str, Any]]:
        kustomization = documents(folder / "kustomization.yaml")[0]
        for resource in kustomization["resources"]:
            target = (folder / resource).resolve()
            if target.is_dir():
                yield from walk(target)
            else:
                yield from documents(target)

    return list(walk(KUBE / overlay))


def config_map(name: str) -> dict[str, str]:
    maps = [d for d in documents(KUBE / "base" / "configmap.yaml") if d["metadata"]["name"] == name]
    return dict(maps[0]["data"])


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(obj["spec"]["template"]["spec"])


def workloads() -> list[dict[str, Any]]:
    return [
        next(o for o in overlay_objects(overlay) if o["kind"] == kind)
        for overlay, kind in OVERLAYS.items()
    ]


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(KUBE)))
def test_every_manifest_parses_and_names_its_kind(path):
    docs = documents(path)
    assert docs
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"]
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"]


@pytest.mark.parametrize("overlay, kind", OVERLAYS.items())
def test_each_overlay_holds_one_mode_only(overlay, kind):
    kinds = [o["kind"] for o in overlay_objects(overlay)]
    assert kinds.count(kind) == 1
    assert not {"CronJob", "Deployment"} - {kind} & set(kinds)  # never both modes at once
    assert {"ConfigMap", "Secret", "PersistentVolumeClaim", "ServiceAccount"} <= set(kinds)


def test_the_cronjob_never_overlaps_and_never_retries_at_once():
    cronjob = next(o for o in overlay_objects("cronjob") if o["kind"] == "CronJob")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] <= 300
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    assert 0 < job["activeDeadlineSeconds"] <= 600
    assert pod_spec(cronjob)["restartPolicy"] == "Never"
    assert pod_spec(cronjob)["containers"][0]["args"][:2] == ["run", "--once"]


def test_the_deployment_is_ready_from_the_metrics_endpoint_and_never_overlaps():
    deployment = next(o for o in overlay_objects("daemon") if o["kind"] == "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    container = pod_spec(deployment)["containers"][0]
    assert container["args"][0] == "daemon"
    probe = container["readinessProbe"]["httpGet"]
    port = next(p for p in container["ports"] if p["name"] == probe["port"])
    listen = yaml.safe_load(config_map("reaper-config")["reaper.yaml"])["metrics"]["listen"]
    assert probe["path"] == "/metrics"
    assert listen == f"0.0.0.0:{port['containerPort']}"  # not loopback: the kubelet probes it


@pytest.mark.parametrize("workload", workloads(), ids=lambda o: o["kind"])
def test_pods_run_restricted_as_the_images_user(workload):
    pod = pod_spec(workload)
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == image_uid()
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        own = container["securityContext"]
        assert own["readOnlyRootFilesystem"] is True
        assert own["allowPrivilegeEscalation"] is False
        assert own["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert {"/var/lib/reaper", "/tmp"} <= set(mounts)  # the only writable paths
        assert set(mounts.values()) <= {v["name"] for v in pod["volumes"]}


@pytest.mark.parametrize("workload", workloads(), ids=lambda o: o["kind"])
def test_pods_mount_the_config_policies_and_secrets_where_the_config_says(workload):
    pod = pod_spec(workload)
    container = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    assert volumes["config"]["configMap"]["name"] == "reaper-config"
    assert config_path == Path(mounts["config"]) / "reaper.yaml"
    config = yaml.safe_load(config_map("reaper-config")["reaper.yaml"])
    assert config["policies"] == mounts["policies"]
    assert volumes["policies"]["configMap"]["name"] == "reaper-policies"
    secret = next(d for d in documents(KUBE / "base" / "secret.yaml"))
    for section in config["backends"].values():
        for key in ("token_file", "api_key_file"):
            if key in section:
                path = Path(section[key])
                assert str(path.parent) == mounts["credentials"]
                assert path.name in secret["stringData"]


def test_the_configmap_holds_a_valid_inert_config_and_policies(tmp_path):
    (tmp_path / "reaper.yaml").write_text(config_map("reaper-config")["reaper.yaml"])
    doc, _ = load_yaml_file(tmp_path / "reaper.yaml")
    problems = check_schema(doc.data, doc.source, load_schema("config"))
    assert problems + check_config_semantics(doc.data) == []
    config = build_config(tmp_path / "reaper.yaml", doc.data)
    assert config.dry_run is True
    policies = tmp_path / "policies"
    policies.mkdir()
    for name, text in config_map("reaper-policies").items():
        (policies / name).write_text(text)
    loaded = load_policies([policies], config.backends)
    assert len(loaded) >= 1
    assert all(policy.dry_run for policy in loaded)


def test_manifests_match_the_kubernetes_schemas():
    validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed"
    )
    version = validate.utils.latest_version()
    for path in manifest_files():
        for doc in documents(path):
            if doc["kind"] != "Kustomization":
                validate.validate(doc, version, strict=True)


def test_the_schema_check_catches_a_misspelt_key():
    validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed"
    )
    cronjob = next(o for o in overlay_objects("cronjob") if o["kind"] == "CronJob")
    cronjob["spec"]["concurrencyPolicyy"] = cronjob["spec"].pop("concurrencyPolicy")
    with pytest.raises(validate.ValidationError):
        validate.validate(cronjob, validate.utils.latest_version(), strict=True)
