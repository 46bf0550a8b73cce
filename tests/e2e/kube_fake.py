"""A fake Kubernetes API server of exactly the endpoints Weir's pod launcher uses, and a
test kubelet that runs each pod's container as a local process.

The fake keeps pods and deployments in memory and answers lightkube's requests: create,
list (by label selector), get and delete pods, replace a pod's status (the kubelet's
call), and get a deployment (the owner of replica pods). Deletion is at once, as with a
grace period of 0.

The kubelet is the container runtime of these tests: every pod it has not started it runs
as `spec.containers[0]` would run in the Weir image (`python` is this interpreter), with
the env resolved as Kubernetes resolves it (values, the downward API's `status.podIP`,
Secret keys) and `$(VAR)` expanded in the arguments; it writes the pod's status back
through the API (Running with a pod IP of 127.0.0.1, Failed with the container's exit
code), kills the process of a pod that was deleted, gives each pod a home folder of its own
(WEIR_HOME: the pod's disk, where it caches code packages), and leaves a pod that asks for a GPU
Pending as Unschedulable, since this machine has none.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

from weir.processes import kill, spawn

POD_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(/status)?$")
DEPLOYMENT_PATH = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)$")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _selected(pod: Mapping[str, Any], selector: str) -> bool:
    labels = pod["metadata"].get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeApiServer:
    """Pods and deployments in memory behind HTTP on loopback."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        #: Every pod ever created, by name, in order.
        self.created: list[str] = []
        self.lock = threading.Lock()
        self._version = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._answer(self, "GET")

            def do_POST(self) -> None:
                fake._answer(self, "POST")

            def do_PUT(self) -> None:
                fake._answer(self, "PUT")

            def do_DELETE(self) -> None:
                fake._answer(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeApiServer:
        """Serve in a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def add_deployment(self, namespace: str, name: str) -> str:
        """A Deployment object (to own replica pods); returns its uid."""
        uid = str(uuid.uuid4())
        self.deployments[(namespace, name)] = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "agent"}]}}}}
        return uid

    def pod_list(self, namespace: str) -> list[dict[str, Any]]:
        """A copy of the namespace's pods."""
        with self.lock:
            return [json.loads(json.dumps(p)) for (ns, _), p in self.pods.items()
                    if ns == namespace]

    def _answer(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = json.loads(request.rfile.read(length)) if length else None
        code, doc = self._route(method, url.path, parse_qs(url.query), body)
        data = json.dumps(doc).encode()
        request.send_response(code)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _route(self, method: str, path: str, query: dict[str, list[str]],
               body: Any) -> tuple[int, dict[str, Any]]:
        match = DEPLOYMENT_PATH.match(path)
        if match and method == "GET":
            found = self.deployments.get((match[1], match[2]))
            return (200, found) if found else (404, _status(404, "NotFound", "no deployment"))
        match = POD_PATH.match(path)
        if not match:
            return 404, _status(404, "NotFound", f"the fake serves no {path}")
        namespace, name, status = match[1], match[2], match[3]
        with self.lock:
            self._version += 1
            if name is None and method == "GET":
                selector = query.get("labelSelector", [""])[0]
                items = [p for (ns, _), p in self.pods.items()
                         if ns == namespace and _selected(p, selector)]
                return 200, {"apiVersion": "v1", "kind": "PodList", "items": items,
                             "metadata": {"resourceVersion": str(self._version)}}
            if name is None and method == "POST":
                name = body["metadata"]["name"]
                if (namespace, name) in self.pods:
                    return 409, _status(409, "AlreadyExists", f'pods "{name}" already exists')
                body["metadata"].update(uid=str(uuid.uuid4()), namespace=namespace,
                                        resourceVersion=str(self._version),
                                        creationTimestamp=time.strftime(
                                            "%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                body["status"] = {"phase": "Pending"}
                self.pods[(namespace, name)] = body
                self.created.append(name)
                return 201, body
            pod = self.pods.get((namespace, name or ""))
            if pod is None:
                return 404, _status(404, "NotFound", f'pods "{name}" not found')
            if method == "GET":
                return 200, pod
            if method == "DELETE":
                del self.pods[(namespace, name or "")]
                return 200, pod
            if method == "PUT" and status:
                pod["status"] = body["status"]
                return 200, pod
        return 405, _status(405, "MethodNotAllowed", f"{method} {path}")


def container_status(state: dict[str, Any], ready: bool = False) -> dict[str, Any]:
    """A container's status as a kubelet writes it (with every required field)."""
    return {"name": "replica", "image": "weir:test", "imageID": "", "ready": ready,
            "restartCount": 0, "state": state}


class TestKubelet:
    """Runs the fake's pods as local processes and reports their status."""

    __test__ = False  # not a pytest class

    def __init__(self, api: FakeApiServer, namespace: str, log_dir: Path,
                 secrets: Mapping[str, Mapping[str, str]]) -> None:
        self.api = api
        self.namespace = namespace
        self.log_dir = log_dir
        self.secrets = secrets
        #: Pod name -> its container's process.
        self.procs: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._http = httpx.Client(base_url=api.url, timeout=5)

    def start(self) -> TestKubelet:
        """Run in a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop, and kill every container process."""
        self._stop.set()
        self._thread.join(10)
        for proc in self.procs.values():
            kill(proc)
        self._http.close()

    def set_status(self, name: str, status: dict[str, Any]) -> None:
        """Write a pod's status through the API, as a kubelet does."""
        self._http.put(f"/api/v1/namespaces/{self.namespace}/pods/{name}/status",
                       json={"status": status})

    def evict(self, name: str) -> None:
        """What a kubelet under memory pressure does: kill the container, mark it Evicted."""
        proc = self.procs.pop(name)
        kill(proc)
        self.set_status(name, {"phase": "Failed", "reason": "Evicted",
                               "message": "The node was low on resource: memory."})

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                self._pass()
            self._stop.wait(0.05)

    def _pass(self) -> None:
        pods = {p["metadata"]["name"]: p for p in self.api.pod_list(self.namespace)}
        for name in [n for n in self.procs if n not in pods]:
            kill(self.procs.pop(name))  # deleted: the runtime stops its container
        for name, pod in pods.items():
            phase = pod["status"].get("phase")
            proc = self.procs.get(name)
            if proc is None and phase == "Pending":
                self._start(pod)
            elif proc is not None and phase == "Running" and proc.poll() is not None:
                del self.procs[name]
                # A container killed by a signal exits 128 + its number, as runtimes report.
                code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
                self.set_status(name, {"phase": "Failed", "containerStatuses": [
                    container_status({"terminated": {"reason": "Error", "exitCode": code}})]})

    def _start(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        (container,) = pod["spec"]["containers"]
        if "nvidia.com/gpu" in container["resources"].get("requests", {}):
            if not pod["status"].get("conditions"):
                self.set_status(name, {"phase": "Pending", "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}]})
            return
        env = {}
        for item in container["env"]:
            if "value" in item:
                env[item["name"]] = item["value"]
            elif "fieldRef" in item["valueFrom"]:
                assert item["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
                env[item["name"]] = "127.0.0.1"
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self.secrets[ref["name"]][ref["key"]]
        command = [sys.executable if c == "python" else c for c in container["command"]]
        args = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), a)
                for a in container["args"]]
        # The image is this interpreter's environment: PATH and the like come from here. A
        # pod's disk is its own: its WEIR_HOME (where it caches code packages) too.
        home = self.log_dir / name
        home.mkdir(parents=True, exist_ok=True)
        # Weir's own settings (etcd's user, the token) come from the spec alone.
        image_env = {k: v for k, v in os.environ.items()
                     if not k.startswith("WEIR_ETCD_") and k != "WEIR_TOKEN"}
        full_env = {**image_env, "WEIR_HOME": str(home), **env}
        self.procs[name] = spawn([*command, *args], log_path=self.log_dir / f"{name}.log",
                                 env=full_env, cwd=container.get("workingDir"))
        self.set_status(name, {"phase": "Running", "podIP": "127.0.0.1", "containerStatuses": [
            container_status({"running": {}}, ready=True)]})


@contextlib.contextmanager
def fake_kubernetes(namespace: str, log_dir: Path,
                    secrets: Mapping[str, Mapping[str, str]]
                    ) -> Iterator[tuple[FakeApiServer, TestKubelet]]:
    """A fake API server and a test kubelet for the block."""
    api = FakeApiServer().start()
    kubelet = TestKubelet(api, namespace, log_dir, secrets).start()
    try:
        yield api, kubelet
    finally:
        kubelet.stop()
        api.stop()
