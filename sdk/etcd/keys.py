"""The etcd key layout: every key Weir writes, in one place.

Layout (one JSON document per key):
- /weir/apps/<name>: an AppGoal: the application's config as submitted, its deployment
  timestamp, and its built deployment specs (or why building failed);
- /weir/http_options: the cluster's HTTP options;
- /weir/history/<ns>: every accepted config, whole (`weir config --history`, `weir rollback`);
- /weir/replicas/<id>: a ReplicaRecord per replica the leader started, written before the
  launch, so a new leader adopts instead of starting twice;
- /weir/leader (lease-bound): the leading controller's identity (JSON with `address`);
- /weir/controllers/<id> (lease-bound): who serves.
A deploy writes every changed key of that list in one etcd transaction.
"""

from __future__ import annotations

APPS_PREFIX = "/weir/apps/"
REPLICAS_PREFIX = "/weir/replicas/"
HISTORY_PREFIX = "/weir/history/"
CONTROLLERS_PREFIX = "/weir/controllers/"
PROXIES_PREFIX = "/weir/proxies/"
HTTP_OPTIONS_KEY = "/weir/http_options"
GRPC_OPTIONS_KEY = "/weir/grpc_options"
SHUTDOWN_KEY = "/weir/shutdown"
LEADER_KEY = "/weir/leader"
