"""Prometheus metrics: every metric Weir exports is defined here, once, for the three servers.

Names follow Ray Serve's (`serve_num_http_requests`, `serve_deployment_processing_latency_ms`,
...) under a `weir_` prefix instead of `ray_`, with Ray's label names, so that a Ray user's
dashboards port by replacing the prefix; docs/observability.md maps each one to Ray's.

Cost on the request path. The proxy serves thousands of requests per second per core, so a
request pays one dict lookup and one lock-free update of its record (`RequestTally`, ~0.4 µs:
its count, errors and latency histogram are all computed from that record when scraped);
rarer events (shed, timed out, refused, handle calls) use prometheus_client's counters, whose
children (`.labels(...)`, a few microseconds each) are looked up once per label values and
kept in a small dict (`LabelCache`). Gauges that describe state (ongoing requests, queued
requests, replica states, autoscaling targets) cost nothing per request: they are read when
Prometheus scrapes (`LiveGauge`), from the counters the servers keep anyway.

Each process owns one set: `proxy_metrics()`, `replica_metrics()`, `controller_metrics()`,
`handle_metrics()` register on the default registry on first use; tests build their own on a
fresh `CollectorRegistry`.
"""

from __future__ import annotations

import contextvars
import functools
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from weir.request_tally import RequestTally

PREFIX = "weir_"
#: Request latency buckets in milliseconds (Ray's defaults, plus sub-millisecond ones: a
#: Weir hop is well under a millisecond).
LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000,
                      30000, 60000, 300000, 600000)
#: Control loop duration buckets in seconds.
LOOP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: A replica's metrics port (0: any free port; several replicas share a machine).
REPLICA_METRICS_PORT_ENV = "WEIR_REPLICA_METRICS_PORT"
#: Status label of a request whose client went away before an answer (nginx's convention).
CLIENT_CLOSED = 499

M = TypeVar("M", bound=MetricWrapperBase)
LabelValues = tuple[str, ...]
#: The (application, deployment) the current gRPC ingress call was routed to.
_grpc_target: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "weir_grpc_target", default=("", ""))


class LabelCache(Generic[M]):
    """A metric's children by label values: `.labels()` runs once per distinct values."""

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self.children: dict[LabelValues, M] = {}

    def __call__(self, *values: str) -> M:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self.metric.labels(*values)
        return child


class LiveGauge(Collector):
    """A gauge family read when scraped: `read()` gives each label values' value now."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...],
                 read: Callable[[], Mapping[LabelValues, float]],
                 registry: CollectorRegistry | None) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.read = read
        if registry is not None:
            registry.register(self)

    def describe(self) -> list[Metric]:
        """The family without samples (so that registering does not call `read`)."""
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        """The family with one sample per label values."""
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, value in self.read().items():
            family.add_metric(list(values), value)
        yield family


def _counter(name: str, documentation: str, labels: tuple[str, ...],
             registry: CollectorRegistry) -> LabelCache[Counter]:
    return LabelCache(Counter(PREFIX + name, documentation, labels, registry=registry))


def failed(outcome: str) -> bool:
    """Whether a call's outcome on a replica (its HTTP status, or OK / ERROR / TIMEOUT /
    USER_ERROR) means the code failed: raised, timed out, or answered 5xx. Pure."""
    return outcome.startswith("5") or outcome in ("ERROR", "TIMEOUT", "USER_ERROR")


def _ingress_tally(protocol: str, name: str, not_ok: str, labels: tuple[str, ...],
                   is_error: Callable[[Any], bool],
                   registry: CollectorRegistry) -> RequestTally:
    """Requests at one of the proxy's ingresses, by status (Ray's names for `protocol`)."""
    return RequestTally(
        requests=(f"{PREFIX}serve_num_{protocol}_requests", f"{name} requests answered by "
                  "the proxy."),
        errors=(f"{PREFIX}serve_num_{protocol}_error_requests", f"{name} requests answered "
                f"with a {not_ok}."),
        latency=(f"{PREFIX}serve_{protocol}_request_latency_ms", f"End-to-end latency of "
                 f"{name} requests at the proxy, in milliseconds."),
        labels=labels, error_labels=(*labels[:-1], "error_code"), buckets=LATENCY_BUCKETS_MS,
        is_error=is_error, status_label=True, registry=registry)


class ProxyMetrics:
    """The proxy's: requests at its HTTP and gRPC ingresses, shed and timed out ones, and
    what waits for a replica."""

    HTTP_LABELS = ("application", "deployment", "route", "method", "status_code")
    GRPC_LABELS = ("application", "deployment", "method", "status_code")

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.http_tally = _ingress_tally("http", "HTTP", "status other than 200",
                                         self.HTTP_LABELS, lambda status: status != 200,
                                         registry)
        self.grpc_tally = _ingress_tally("grpc", "gRPC", "code other than OK",
                                         self.GRPC_LABELS, lambda code: code != "OK",
                                         registry)
        self.shed = _counter(
            "serve_num_shed_requests", "Requests refused because the deployment's queue was "
            "full (HTTP 503, gRPC RESOURCE_EXHAUSTED).",
            ("application", "deployment", "protocol"), registry)
        self.timed_out = _counter(
            "serve_num_timed_out_requests", "Requests past request_timeout_s (HTTP 408, gRPC "
            "DEADLINE_EXCEEDED).", ("application", "deployment", "protocol"), registry)
        self.ongoing_http = 0
        self.ongoing_grpc = 0
        self._registry = registry
        LiveGauge(PREFIX + "serve_num_ongoing_http_requests",
                  "HTTP requests the proxy is answering now.", (),
                  lambda: {(): self.ongoing_http}, registry)
        LiveGauge(PREFIX + "serve_num_ongoing_grpc_requests",
                  "gRPC requests the proxy is answering now.", (),
                  lambda: {(): self.ongoing_grpc}, registry)

    def http(self, app: str, deployment: str, route: str, method: str, status: int,
             seconds: float) -> None:
        """One HTTP request answered with `status` after `seconds`."""
        self.http_tally.observe((app, deployment, route, method, status), seconds * 1000)

    def grpc(self, app: str, deployment: str, method: str, code: str,
             seconds: float) -> None:
        """One gRPC request answered with status `code` (a grpc.StatusCode name)."""
        self.grpc_tally.observe((app, deployment, method, code), seconds * 1000)
        if code == "RESOURCE_EXHAUSTED":
            self.shed(app, deployment, "grpc").inc()
        elif code == "DEADLINE_EXCEEDED":
            self.timed_out(app, deployment, "grpc").inc()

    def grpc_routed(self, app: str, deployment: str) -> None:
        """The current gRPC ingress call goes to this deployment (its labels)."""
        _grpc_target.set((app, deployment))
        self.ongoing_grpc += 1

    def grpc_finished(self, method_path: str, code: Any, started: float) -> str:
        """The current gRPC ingress call ended with `code` (the servicer context's code(),
        None for OK) after starting at perf_counter() `started`; returns the code's name."""
        name = "OK" if code is None else str(code.name)
        app, deployment = _grpc_target.get()
        if app:
            self.ongoing_grpc -= 1
        self.grpc(app, deployment, method_path, name, time.perf_counter() - started)
        return name

    def follow_queues(self, routers: Callable[[], Mapping[tuple[str, str], Any]]) -> None:
        """Export each deployment's requests waiting for a replica (`num_queued` of the
        routers `routers()` gives, read at scrape time)."""
        LiveGauge(PREFIX + "serve_deployment_queued_queries",
                  "Requests waiting in this process for a replica of the deployment.",
                  ("application", "deployment"),
                  lambda: {key: r.num_queued for key, r in list(routers().items())},
                  self._registry)


class ReplicaMetrics:
    """A replica's: calls its user code served, their latency, its load and refusals."""

    LABELS = ("application", "deployment", "replica", "route")

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.tally = RequestTally(
            requests=(PREFIX + "serve_deployment_request_counter", "Requests this replica's "
                      "code served."),
            errors=(PREFIX + "serve_deployment_error_counter", "Requests this replica's code "
                    "failed (raised, timed out, or answered HTTP 5xx)."),
            latency=(PREFIX + "serve_deployment_processing_latency_ms", "Time in the "
                     "replica's user code per request, in milliseconds."),
            labels=self.LABELS, error_labels=self.LABELS, buckets=LATENCY_BUCKETS_MS,
            is_error=failed, status_label=False, prefix=self._labels, registry=registry)
        self.rejected = _counter(
            "serve_replica_rejected_requests", "Calls refused at max_ongoing_requests or while "
            "not running (the caller retries them on another replica).",
            ("application", "deployment", "replica"), registry)
        self._registry = registry
        self._identity: tuple[str, str, str] | None = None
        self._identify: Callable[[], tuple[str, str, str]] = lambda: ("", "", "")

    def identify_by(self, identify: Callable[[], tuple[str, str, str]]) -> None:
        """Where the replica's (application, deployment, replica) labels come from: known
        only once the controller told it what to run."""
        self._identify = identify

    def _labels(self) -> tuple[str, str, str]:
        if self._identity is None or not self._identity[0]:
            self._identity = self._identify()
        return self._identity

    def served(self, route: str, outcome: str, seconds: float) -> None:
        """One call served: `outcome` is the HTTP status, or OK / ERROR / TIMEOUT."""
        self.tally.observe((route, outcome), seconds * 1000)

    def refused(self) -> None:
        """One call refused before it started."""
        self.rejected(*self._labels()).inc()

    def follow_load(self, ongoing: Callable[[], int]) -> None:
        """Export the replica's ongoing requests (`ongoing()`, read at scrape time)."""
        LiveGauge(PREFIX + "serve_replica_processing_queries",
                  "Requests this replica is processing now.",
                  ("application", "deployment", "replica"),
                  lambda: {self._labels(): ongoing()}, self._registry)


class HandleMetrics:
    """Calls made through deployment handles (between deployments, or from a driver)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.calls = _counter(
            "serve_handle_request_counter", "Calls made through deployment handles, by the "
            "deployment called and the caller (application/deployment, or driver).",
            ("application", "deployment", "caller"), registry)

    def call(self, app: str, deployment: str, caller: str) -> None:
        """One handle call made."""
        self.calls(app, deployment, caller).inc()


class ControllerMetrics:
    """The controller's: its control loop, leadership, etcd errors, and the cluster state
    as the leader last saw it (replica states, targets)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.loop_duration = Histogram(
            PREFIX + "serve_controller_control_loop_duration_s", "Duration of one pass of "
            "the leader's reconcile loop, in seconds.", registry=registry,
            buckets=LOOP_BUCKETS_S)
        self.loops = Counter(PREFIX + "serve_controller_num_control_loops",
                             "Passes of the leader's reconcile loop.", registry=registry)
        self.leader_changes = Counter(
            PREFIX + "serve_controller_leader_changes", "Times this controller became or "
            "stopped being the leader.", registry=registry)
        self.is_leader = 0
        LiveGauge(PREFIX + "serve_controller_is_leader", "1 while this controller leads.", (),
                  lambda: {(): self.is_leader}, registry)
        self.etcd_errors = _counter(
            "serve_controller_etcd_errors", "etcd calls of the controller that failed.",
            ("operation",), registry)
        self.replica_starts = _counter(
            "serve_deployment_replica_starts", "Replicas the leader started (new ones and "
            "replacements of failed ones).", ("application", "deployment"), registry)
        self._snapshot = ClusterSnapshot()
        self._make_snapshot: Callable[[], ClusterSnapshot] | None = None
        LiveGauge(PREFIX + "serve_deployment_replicas", "Replicas by state.",
                  ("application", "deployment", "state"),
                  lambda: self.snapshot.replica_states, registry)
        LiveGauge(PREFIX + "serve_deployment_replica_healthy", "1 if the replica is RUNNING "
                  "and passes its health checks, else 0.",
                  ("application", "deployment", "replica"),
                  lambda: self.snapshot.replica_healthy, registry)
        LiveGauge(PREFIX + "serve_deployment_target_replicas", "Replicas the leader aims "
                  "for (num_replicas, or the autoscaler's decision).",
                  ("application", "deployment"),
                  lambda: self.snapshot.targets, registry)
        LiveGauge(PREFIX + "serve_autoscaling_target_replicas", "The autoscaler's target "
                  "replica count of each autoscaled deployment.", ("application", "deployment"),
                  lambda: self.snapshot.autoscaling_targets, registry)

    @property
    def snapshot(self) -> ClusterSnapshot:
        """The cluster state as the leader last saw it (made on first read after a pass
        gave a new one, `snapshot_later`)."""
        make = self._make_snapshot
        if make is not None:
            self._snapshot, self._make_snapshot = make(), None
        return self._snapshot

    @snapshot.setter
    def snapshot(self, snapshot: ClusterSnapshot) -> None:
        self._snapshot, self._make_snapshot = snapshot, None

    def snapshot_later(self, make: Callable[[], ClusterSnapshot]) -> None:
        """The next snapshot is `make()`, made when first read (a scrape), not now: most
        passes' snapshots are never read."""
        self._make_snapshot = make

    def leadership(self, leading: bool) -> None:
        """This controller started or stopped leading."""
        if int(leading) != self.is_leader:
            self.is_leader = int(leading)
            self.leader_changes.inc()
            if not leading:
                self.snapshot = ClusterSnapshot()


class ClusterSnapshot:
    """What the leader saw on its last pass, as gauge samples (replaced whole, so that a
    scrape never sees half a pass)."""

    def __init__(self, replica_states: Mapping[LabelValues, float] | None = None,
                 replica_healthy: Mapping[LabelValues, float] | None = None,
                 targets: Mapping[LabelValues, float] | None = None,
                 autoscaling_targets: Mapping[LabelValues, float] | None = None) -> None:
        self.replica_states = dict(replica_states or {})
        self.replica_healthy = dict(replica_healthy or {})
        self.targets = dict(targets or {})
        self.autoscaling_targets = dict(autoscaling_targets or {})


def cluster_snapshot(replicas: list[tuple[str, str, str, str, bool]],
                     targets: Mapping[tuple[str, str], int],
                     autoscaled: set[tuple[str, str]] | frozenset[tuple[str, str]]
                     ) -> ClusterSnapshot:
    """The leader's gauges from its pass: `replicas` as (app, deployment, replica id, state,
    healthy), each deployment's target replica count, which deployments autoscale. Pure."""
    states: dict[LabelValues, float] = {}
    healthy: dict[LabelValues, float] = {}
    for app, deployment, replica_id, state, ok in replicas:
        key = (app, deployment, state)
        states[key] = states.get(key, 0) + 1
        healthy[(app, deployment, replica_id)] = 1.0 if ok else 0.0
    return ClusterSnapshot(
        states, healthy, {k: float(n) for k, n in targets.items()},
        {k: float(n) for k, n in targets.items() if k in autoscaled})


@functools.cache
def proxy_metrics() -> ProxyMetrics:
    """This process's proxy metrics (on the default registry)."""
    return ProxyMetrics()


@functools.cache
def replica_metrics() -> ReplicaMetrics:
    """This process's replica metrics (on the default registry)."""
    return ReplicaMetrics()


@functools.cache
def handle_metrics() -> HandleMetrics:
    """This process's handle metrics (on the default registry)."""
    return HandleMetrics()


@functools.cache
def controller_metrics() -> ControllerMetrics:
    """This process's controller metrics (on the default registry)."""
    return ControllerMetrics()


def exposition() -> tuple[bytes, str]:
    """The default registry in Prometheus' text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve_metrics(host: str, port: int) -> str:
    """Serve the default registry over HTTP on host:port (0: a free port) from a daemon
    thread, for processes whose own port is not HTTP (controller, replica); returns the
    address bound."""
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=host)
    return f"{host}:{server.server_port}"


def replica_metrics_port() -> int:
    """The port a replica serves its metrics on (WEIR_REPLICA_METRICS_PORT, else any free
    one; -1: none)."""
    value = os.environ.get(REPLICA_METRICS_PORT_ENV, "0")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{REPLICA_METRICS_PORT_ENV}={value!r} is not a port number: set it "
                         "to a port, 0 for any free port, or -1 for none") from None
