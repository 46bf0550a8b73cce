"""The launcher interface: how a node agent starts, watches and stops its replicas.

Design. The node agent decides (`plan_node`); a launcher only carries the decision out on
one kind of substrate. `LocalProcessLauncher` runs processes on this machine;
`PodLauncher` creates Kubernetes pods. Every method is a coroutine, since a pod launcher
talks to an API server; a process launcher pushes its blocking calls to a thread.

`ended` looks at every replica the agent runs in one call rather than one replica at a
time: the pod launcher answers it with a single list of its pods, so an agent that checks
its replicas four times a second costs the API server one request per pass, not one per
replica. It says why each ended replica ended when the substrate knows (a pod's
`Evicted`, `OOMKilled`, `ImagePullBackOff`, or Pending for too long): the agent puts that
reason in its node record's `failed` map, which the leader shows in `weir status` and acts
on by replacing the replica.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from weir.etcd.records import ReplicaRecord
from weir.runtime_env import PreparedEnv


class ReplicaLauncher(Protocol):
    """Starts, adopts, watches and stops the replicas of one node.

    A replica's handle is a nonzero int the launcher picks (a PID for a process); the agent
    keeps it in its node record and passes it back as the record's `pid`.
    """

    async def launch(self, record: ReplicaRecord, env: PreparedEnv) -> int:
        """Start the replica; returns its handle. Raises OSError (with a message that
        says what to fix) when it cannot be started."""
        ...

    async def adopt(self, assigned: Mapping[str, ReplicaRecord],
                    known: Mapping[str, int]) -> dict[str, int]:
        """After the agent restarted: the assigned replicas that still run, by replica id,
        with their handles. `known` holds the handles the node record had kept."""
        ...

    async def ended(self, running: Mapping[str, ReplicaRecord]) -> dict[str, str]:
        """Of the replicas the agent runs (each record's `pid` is its handle), those that
        no longer run, by replica id, with why ("": no reason known, e.g. a process that
        exited). A replica reported here is not reported again."""
        ...

    async def kill(self, record: ReplicaRecord) -> None:
        """Stop the replica at once if it still runs (its `pid` is its handle)."""
        ...


@runtime_checkable
class KeepsSpare(Protocol):
    """A launcher that keeps a replica process started ahead (`LocalProcessLauncher`'s warm
    spare): the agent lets it tend the spare once a pass, tells it when an app is deployed,
    and closes it as it exits."""

    def expect_replicas(self) -> None:
        """An app was deployed: replicas may be assigned here soon. Returns at once."""
        ...

    async def tend(self) -> None:
        """Start or let go of the spare as its policy says."""
        ...

    async def close(self) -> None:
        """Let go of the spare."""
        ...
