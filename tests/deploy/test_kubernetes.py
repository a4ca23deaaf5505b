"""The Kubernetes manifests as the cluster would run them: the pod's user can read every
secret file the worker is told to read (fsGroup and mode agree), the pod is restricted,
the grace period outlives the worker's stop grace, and the policy files (PDB,
NetworkPolicy, ServiceAccount) are there. `deploy/policy/run` (CI) checks them against
Kubernetes' schemas and checkov."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.config import Settings

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def _docs() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(KUBERNETES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def _one(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _docs() if d["kind"] == kind]
    return doc


def _pods() -> list[tuple[str, dict[str, Any]]]:
    deployment = _one("Deployment")["spec"]["template"]["spec"]
    cronjob = _one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return [("Deployment", deployment), ("CronJob", cronjob)]


def _settings() -> dict[str, str]:
    data: dict[str, str] = _one("ConfigMap")["data"]
    return data


def _can_read(pod: dict[str, Any], container: dict[str, Any], volume: dict[str, Any]) -> bool:
    """Whether the container's user may read a file of this secret volume. Kubernetes
    makes such files owned by root, with the volume's group fsGroup (when set) and its
    defaultMode (0644 when unset). Judged on the mode as written: the kubelet's own
    widening under fsGroup is not counted on."""
    pod_sc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    groups = {sc.get("runAsGroup", pod_sc.get("runAsGroup"))} | set(
        pod_sc.get("supplementalGroups", [])
    )
    mode = volume["secret"].get("defaultMode", 0o644)
    file_group = pod_sc.get("fsGroup", 0)
    if uid == 0:
        return True
    if file_group in groups and mode & 0o040:
        return True
    return bool(mode & 0o004)


def _secret_mount(pod: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The secret volume `path` lies in (a file in it, or the folder itself)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        inside = path == mount["mountPath"] or posixpath.dirname(path) == mount["mountPath"]
        if inside and "secret" in volumes[mount["name"]]:
            assert mount.get("readOnly") is True, mount
            return volumes[mount["name"]]
    raise AssertionError(f"{path} is in no secret volume of the pod")


@pytest.mark.parametrize("workload", ["Deployment", "CronJob"])
def test_the_pods_user_can_read_the_mounted_token_and_kafka_files(workload: str) -> None:
    pod = dict(_pods())[workload]
    (container,) = pod["containers"]
    settings = _settings()
    wanted = [settings["XLEDGER_TOKEN_DIR"]] + [
        settings[name]
        for name in (
            "FLYT_KAFKA_SASL_USERNAME_FILE",
            "FLYT_KAFKA_SASL_PASSWORD_FILE",
            "FLYT_KAFKA_SSL_CA_FILE",
        )
    ]
    assert settings["FLYT_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    for path in wanted:
        volume = _secret_mount(pod, container, path)
        assert _can_read(pod, container, volume), (path, volume, pod.get("securityContext"))
        # Readable by the pod's group, by no one else.
        assert not volume["secret"]["defaultMode"] & 0o007, volume


@pytest.mark.parametrize("workload", ["Deployment", "CronJob"])
def test_the_pods_are_restricted(workload: str) -> None:
    pod = dict(_pods())[workload]
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    tmp = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/tmp"]
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[tmp]


def test_the_grace_period_outlives_the_workers_stop_grace() -> None:
    """SIGTERM, then SIGKILL after terminationGracePeriodSeconds: the worker must have
    handed its partitions over (within FLYT_STOP_GRACE_S) before that."""
    pod = dict(_pods())["Deployment"]
    grace = float(_settings().get("FLYT_STOP_GRACE_S", Settings().stop_grace_s))
    assert pod["terminationGracePeriodSeconds"] > grace + 5


def test_the_cluster_policies_are_there() -> None:
    account = _one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    for pod in dict(_pods()).values():
        assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert _one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    spread = _one("Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}
    policy = _one("NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    broker_port = int(_settings()["FLYT_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    assert ports == {broker_port, 443, 53}  # the brokers, Xledger, DNS: nothing else
