"""The etcd key layout: every key Weir writes, in one place.

Layout (one JSON document per key):
- /weir/apps/<name>: an AppGoal: the application's config as submitted, its deployment
  timestamp, and its built deployment specs (or why building failed);
- /weir/http_options: the cluster's HTTP options;
- /weir/history/<ns>: every accepted config, whole (`weir config --history`, `weir rollback`);
- /weir/replicas/<id>: a ReplicaRecord per replica the leader started, written before the
  launch, so a new leader adopts instead of starting twice;
- /weir/nodes/<id> (lease-bound): a NodeRecord per node agent: what it offers, the
  replicas it runs;
- /weir/leader (lease-bound): the leading controller's identity (JSON with `address`);
- /weir/controllers/<id> (lease-bound): who serves;
- /weir/events/<ns>-<i>: the leader's recent events (deploys, failures, failovers), trimmed
  to the last few hundred (weir.controller.event_log).
A deploy writes every changed key of that list in one etcd transaction.
"""

from __future__ import annotations

APPS_PREFIX = "/weir/apps/"
REPLICAS_PREFIX = "/weir/replicas/"
HISTORY_PREFIX = "/weir/history/"
EVENTS_PREFIX = "/weir/events/"
CONTROLLERS_PREFIX = "/weir/controllers/"
PROXIES_PREFIX = "/weir/proxies/"
HTTP_OPTIONS_KEY = "/weir/http_options"
GRPC_OPTIONS_KEY = "/weir/grpc_options"
#: The cluster's own `logging_config` (a config file's top level, `serve.start`): how the
#: controllers and proxies log (`weir.system_logging`). Absent: WEIR_LOG_LEVEL/WEIR_LOG_JSON.
LOGGING_CONFIG_KEY = "/weir/logging_config"
#: When the cluster was last shut down (UNIX seconds): processes started before then exit.
#: A time, not a flag, since etcd's data outlives a shutdown (`weir start` brings it back).
SHUTDOWN_KEY = "/weir/shutdown"


def shut_down_since(value: bytes | None, started_at: float) -> bool:
    """Whether the shutdown key's `value` orders a process started at `started_at` to exit."""
    if value is None:
        return False
    try:
        return float(value) >= started_at
    except ValueError:
        return False
NODES_PREFIX = "/weir/nodes/"
LEADER_KEY = "/weir/leader"
