"""A replica's pod as plain data, and what a pod's status says of its replica."""

from __future__ import annotations

import re
from typing import Any

import pytest

from weir.etcd.records import ReplicaRecord
from weir.replica.pod_replica import replica_process_env
from weir.replica.pod_spec import (
    GPU_RESOURCE,
    REPLICA_ID_ANNOTATION,
    PodSettings,
    container_resources,
    label_value,
    pod_manifest,
    pod_name,
    pod_outcome,
    pod_replica_id,
)
from weir.runtime_env import PreparedEnv

SETTINGS = PodSettings(namespace="serving", cluster_id="c1", etcd_endpoints="etcd:2379",
                       default_image="weir:0.1", token_secret=("weir-token", "token"),
                       owner={"apiVersion": "apps/v1", "kind": "Deployment",
                              "name": "weir-pod-agent", "uid": "u-1"})
RECORD = ReplicaRecord("Summarizer_App#LLM#a1b2c3", "Summarizer_App", "LLM", "v" * 80,
                       pid=0, started_at=0.0, node_id="kubernetes-serving",
                       resources={"CPU": 0.5, "GPU": 1.0, "memory": 2 * 1024**3})
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def test_the_pod_carries_the_replica_its_labels_resources_and_owner() -> None:
    pod = pod_manifest(RECORD, PreparedEnv(env_vars={"MODEL": "small"}), SETTINGS)
    meta, spec = pod["metadata"], pod["spec"]
    assert DNS_LABEL.match(meta["name"]) and meta["namespace"] == "serving"
    assert meta["annotations"][REPLICA_ID_ANNOTATION] == RECORD.replica_id
    assert pod_replica_id(pod) == RECORD.replica_id
    assert all(LABEL_VALUE.match(v) for v in meta["labels"].values())
    assert meta["labels"]["weir.dev/deployment"] == "LLM"
    assert meta["ownerReferences"][0]["uid"] == "u-1"
    (container,) = spec["containers"]
    assert container["image"] == "weir:0.1" and spec["restartPolicy"] == "Never"
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": str(2 * 1024**3), GPU_RESOURCE: "1"},
        "limits": {"memory": str(2 * 1024**3), GPU_RESOURCE: "1"}}
    assert container["args"][-2:] == ["--host", "$(WEIR_POD_IP)"]
    env = {e["name"]: e for e in container["env"]}
    assert env["WEIR_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["WEIR_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "weir-token",
                                                             "key": "token"}
    assert env["MODEL"]["value"] == "small"


def test_the_apps_image_uri_wins_over_the_default() -> None:
    pod = pod_manifest(RECORD, PreparedEnv(image_uri="repo/llm:3"), SETTINGS)
    assert pod["spec"]["containers"][0]["image"] == "repo/llm:3"


def test_a_fractional_gpu_cannot_be_asked_of_kubernetes() -> None:
    with pytest.raises(ValueError, match=r"num_gpus=0.5.*whole GPUs"):
        container_resources({"GPU": 0.5})
    assert container_resources({"CPU": 1.0}) == {"requests": {"cpu": "1000m"}}


def test_names_and_label_values_stay_valid_and_apart() -> None:
    assert pod_name("a#B#1") != pod_name("a#b#1")
    assert DNS_LABEL.match(pod_name("x" * 300 + "#Ä#1"))
    assert label_value("LLM") == "LLM"
    for text in ("a#b#c", "-x-", "y" * 100, "#"):
        assert LABEL_VALUE.match(label_value(text)), text
    assert label_value("y" * 100) != label_value("y" * 99)


def pod(phase: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": {"phase": phase, **status}}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"containerStatuses": [{"name": "replica", "state": {
        "waiting": {"reason": reason, "message": message}}}]}


def test_a_running_pod_is_alive_and_an_ended_one_says_why() -> None:
    assert pod_outcome(pod("Running"), 0, 60) is None
    assert pod_outcome(pod("Unknown"), 999, 60) is None
    evicted = pod("Failed", reason="Evicted", message="The node was low on memory.")
    assert pod_outcome(evicted, 0, 60) == "pod p Failed: Evicted: The node was low on memory."
    oom = pod("Failed", containerStatuses=[{"name": "replica", "state": {
        "terminated": {"reason": "OOMKilled", "exitCode": 137}}}])
    assert pod_outcome(oom, 0, 60) == "pod p Failed: OOMKilled: exit code 137"
    deleting = {"metadata": {"name": "p", "deletionTimestamp": "2025-01-01T00:00:00Z"},
                "status": {"phase": "Running"}}
    assert pod_outcome(deleting, 0, 60) == "pod p is being deleted"


def test_a_pending_pod_fails_after_its_timeout_or_at_once_if_hopeless() -> None:
    unschedulable = pod("Pending", conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}])
    assert pod_outcome(unschedulable, 59, 60) is None
    assert pod_outcome(unschedulable, 61, 60) == (
        "pod p Pending for 61s (limit 60s): Unschedulable: "
        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    backoff = pod("Pending", **waiting("ImagePullBackOff", "Back-off pulling image"))
    assert pod_outcome(backoff, 10, 60) is None
    assert "ImagePullBackOff: Back-off pulling image" in str(pod_outcome(backoff, 60, 60))
    bad_name = pod("Pending", **waiting("InvalidImageName", "couldn't parse"))
    assert pod_outcome(bad_name, 0, 60) == "pod p cannot start: InvalidImageName: couldn't parse"


def test_etcd_tls_files_are_mounted_where_the_replica_looks() -> None:
    settings = PodSettings(namespace="n", cluster_id="c", etcd_endpoints="https://e:2379",
                           default_image="i", etcd_tls_secret="etcd-client-tls")
    spec = pod_manifest(RECORD, PreparedEnv(), settings)["spec"]
    assert spec["volumes"] == [{"name": "etcd-tls",
                                "secret": {"secretName": "etcd-client-tls"}}]
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WEIR_ETCD_CA_FILE"] == container["volumeMounts"][0]["mountPath"] + "/ca.crt"


def test_a_pod_runs_its_replica_through_the_code_fetching_entry() -> None:
    pod = pod_manifest(RECORD, PreparedEnv(), SETTINGS)
    args = pod["spec"]["containers"][0]["args"]
    assert args[:2] == ["-m", "weir.replica.pod_replica"] and "--replica-id" in args
    env = PreparedEnv(cwd="/pkg/abc", sys_paths=["/pkg/abc", "/pkg/mods"],
                      env_vars={"MODE": "pod"})
    out = replica_process_env(env, {"PYTHONPATH": "/opt/lib", "MODE": "image", "PATH": "/bin"})
    assert out == {"PYTHONPATH": "/pkg/abc:/pkg/mods:/opt/lib", "MODE": "pod", "PATH": "/bin"}
    assert replica_process_env(PreparedEnv(), {"PATH": "/bin"}) == {"PATH": "/bin"}


def test_the_etcd_user_comes_from_its_secret_and_an_app_cannot_override_it() -> None:
    settings = PodSettings(namespace="n", cluster_id="c", etcd_endpoints="e:2379",
                           default_image="i", etcd_credentials_secret="etcd-user")
    env = PreparedEnv(env_vars={"WEIR_ETCD_USER": "mallory", "MODE": "x"})
    (container,) = pod_manifest(RECORD, env, settings)["spec"]["containers"]
    by_name = {e["name"]: e for e in container["env"]}
    assert [e["name"] for e in container["env"]].count("WEIR_ETCD_USER") == 1
    assert by_name["WEIR_ETCD_USER"]["valueFrom"]["secretKeyRef"] == {
        "name": "etcd-user", "key": "username"}
    assert by_name["WEIR_ETCD_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "etcd-user", "key": "password"}
    assert by_name["MODE"]["value"] == "x"


def test_replica_pods_are_annotated_for_scraping_when_their_metrics_port_is_fixed() -> None:
    import dataclasses

    fixed = dataclasses.replace(SETTINGS, env={"WEIR_REPLICA_METRICS_PORT": "9090"})
    annotations = pod_manifest(RECORD, PreparedEnv(), fixed)["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9090"
    for env in ({}, {"WEIR_REPLICA_METRICS_PORT": "0"}, {"WEIR_REPLICA_METRICS_PORT": "-1"}):
        pod = pod_manifest(RECORD, PreparedEnv(), dataclasses.replace(SETTINGS, env=env))
        assert "prometheus.io/scrape" not in pod["metadata"]["annotations"]
