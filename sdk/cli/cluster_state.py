"""The state file of a `weir start` cluster: how later commands find it and stop it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from weir.processes import pid_runs

STATE_FILE_NAME = "cluster.json"


def weir_home() -> Path:
    """Where `weir start` keeps its state file (WEIR_HOME, else ~/.weir)."""
    return Path(os.environ.get("WEIR_HOME") or Path.home() / ".weir")


@dataclass
class ClusterInfo:
    """How to reach and stop a local cluster."""

    cluster_id: str
    etcd_endpoints: str
    controllers: list[str]
    http: str
    temp_dir: str
    pids: dict[str, int] = field(default_factory=dict)
    #: The gRPC ingress address ("" when off).
    grpc: str = ""
    #: This machine joined another's cluster (`weir start --join`): stopping it here
    #: stops only this machine's processes.
    joined: bool = False
    #: The address this machine's servers bind to and advertise.
    host: str = "127.0.0.1"
    #: The cluster token every call to its gRPC servers carries ("" when off; weir.auth).
    token: str = ""

    @property
    def address(self) -> str:
        """The admin address: every controller, comma-separated (any one will do; the
        admin client skips one that is down)."""
        return ",".join(self.controllers)

    def save(self, path: Path) -> None:
        """Write the state file, readable by its owner only (it holds the token)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(asdict(self), indent=2))
        # A file left by an older version (or another umask) keeps its old mode: set it.
        os.chmod(path, 0o600)

    @classmethod
    def read(cls, path: Path) -> ClusterInfo:
        """Read a state file as it is (OSError, ValueError or TypeError if it cannot be)."""
        return cls(**json.loads(path.read_text()))

    @classmethod
    def load(cls, path: Path) -> ClusterInfo | None:
        """Read a state file whose cluster still runs (None otherwise)."""
        try:
            info = cls.read(path)
        except (OSError, ValueError, TypeError):
            return None
        if not any(pid_runs(pid) for name, pid in info.pids.items()
                   if name.startswith(("controller", "node-agent"))):
            return None
        return info


def running_cluster() -> ClusterInfo | None:
    """The `weir start` cluster of the state file, if it still runs."""
    return ClusterInfo.load(weir_home() / STATE_FILE_NAME)
