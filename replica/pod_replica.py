"""The first process of a replica pod: fetch the app's code, then become the replica.

Design. Code shipped by value (a working_dir or py_modules packed by `weir deploy` and kept
by the controllers, `weir.packages`) reaches a pod the way it reaches a node agent on
another machine: the pod reads its app's runtime_env in etcd and fetches each package from
a controller into its own cache (`prepare_app_env`, the node agent's own call). The pod
agent cannot do it for the pod, since its disk is not the pod's. Then this process runs
the replica's own entry point (`python -m weir.replica`) in the package's directory with
the package on sys.path and PYTHONPATH. In this process rather than by `exec`: a second
interpreter would import grpc and the rest again, a second or more of every pod's start
on a busy machine; the replica module still knows nothing of pods.

Failure it guards against: a package that cannot be fetched (no controller has it, etcd is
away). The process exits 1 and writes why to Kubernetes' termination message, so the pod
ends `Failed` with the reason in `weir status`, and the leader places a new replica.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import runpy
import sys
from pathlib import Path

import structlog

from weir.etcd.etcd_store import EtcdStore
from weir.etcd.keys import REPLICAS_PREFIX
from weir.etcd.records import ReplicaRecord
from weir.etcd.store import StoreError
from weir.packages.cache import PackageCache
from weir.packages.resolver import default_packages_dir, prepare_app_env
from weir.processes import REPLICA_MODULE
from weir.replica.pod_spec import POD_REPLICA_MODULE
from weir.runtime import configure_logging
from weir.runtime_env import PreparedEnv, RuntimeEnvError

log = structlog.get_logger("weir.replica.pod_replica")

#: Where Kubernetes reads a container's last words (`terminationMessagePath`'s default).
TERMINATION_LOG = Path("/dev/termination-log")


async def replica_env(etcd: str, replica_id: str, packages_dir: Path) -> PreparedEnv:
    """The replica's app's runtime_env, its packages fetched into `packages_dir`.
    Raises RuntimeEnvError or StoreError, naming what could not be had."""
    store = EtcdStore(etcd, timeout=5.0)
    try:
        kv = await store.get(REPLICAS_PREFIX + replica_id)
        if kv is None:
            raise RuntimeEnvError(f"replica {replica_id} is not in etcd at {etcd} (stopped "
                                  "before its pod started)")
        app = ReplicaRecord.from_bytes(kv.value).app
        return await prepare_app_env(store, app, PackageCache(packages_dir))
    finally:
        await store.close()


def replica_process_env(env: PreparedEnv, base: dict[str, str]) -> dict[str, str]:
    """The replica's environment: `base`, the app's env vars, and its code on PYTHONPATH
    (before what was there)."""
    out = {**base, **env.env_vars}
    if env.sys_paths:
        out["PYTHONPATH"] = os.pathsep.join([*env.sys_paths, *filter(None, [
            base.get("PYTHONPATH")])])
    return out


def _last_words(message: str) -> None:
    # Only in a container: Kubernetes creates the file; elsewhere /dev is not ours to write.
    if TERMINATION_LOG.exists():
        try:
            TERMINATION_LOG.write_text(message)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m weir.replica.pod_replica <the replica's arguments>`."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=f"python -m {POD_REPLICA_MODULE}")
    parser.add_argument("--replica-id", required=True)
    parser.add_argument("--etcd", required=True)
    opts, _ = parser.parse_known_args(args)
    configure_logging("pod_replica", replica_id=opts.replica_id)
    try:
        env = asyncio.run(replica_env(opts.etcd, opts.replica_id, default_packages_dir()))
    except (RuntimeEnvError, StoreError) as exc:
        message = f"replica {opts.replica_id} cannot get its code: {exc}"
        log.error("cannot get the app's code", replica_id=opts.replica_id, error=str(exc))
        _last_words(message)
        sys.exit(1)
    if env.cwd:
        os.chdir(env.cwd)
    log.info("starting replica", replica_id=opts.replica_id, cwd=env.cwd or os.getcwd(),
             sys_paths=env.sys_paths)
    os.environ.update(replica_process_env(env, dict(os.environ)))  # for its children too
    sys.path[:0] = env.sys_paths
    sys.argv = [REPLICA_MODULE, *args]
    runpy.run_module(REPLICA_MODULE, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
