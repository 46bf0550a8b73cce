"""Finding a package by hash where code runs: this machine's cache first, then a controller.

A node agent (and a leader building an app) meets package URIs in runtime_envs. The
package is fetched once into the machine's own cache and reused for every replica after.
A replica pod is a machine of its own: the pod agent leaves packages out of what it
prepares (`without_packages`), and the pod's first process fetches them into the pod's cache
(`prepare_app_env`, the same call a node agent makes) before it becomes the replica.
Any controller listed in etcd can serve it (a deploy uploads to all of them); they are
tried in turn, so one that is down or lacks the package (it started after the deploy) is
skipped. `weir.runtime_env.prepare` calls the resolver in a worker thread, so fetching uses
gRPC's blocking API there and never touches the caller's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import structlog

from weir import auth
from weir.etcd.keys import APPS_PREFIX, CONTROLLERS_PREFIX
from weir.etcd.store import Store
from weir.packages.archive import PackageError, check_hash
from weir.packages.cache import PackageCache
from weir.packages.service import fetch_package_blocking
from weir.runtime_env import PackageResolver, PreparedEnv, names_packages, package_hash, prepare

log = structlog.get_logger("weir.packages")

#: The folder of a machine's package cache, under its Weir home or state dir.
PACKAGES_DIR_NAME = "packages"


def default_packages_dir() -> Path:
    """A process's package cache when none is given: WEIR_HOME/packages, else a folder
    under the system's temp dir."""
    home = os.environ.get("WEIR_HOME")
    if home:
        return Path(home) / PACKAGES_DIR_NAME
    return Path(tempfile.gettempdir()) / f"weir-{PACKAGES_DIR_NAME}"


async def controller_addresses(store: Store, *, skip: str = "") -> list[str]:
    """The gRPC addresses of the controllers registered in etcd (but `skip`)."""
    items, _ = await store.get_prefix(CONTROLLERS_PREFIX)
    out = []
    for kv in items:
        try:
            address = json.loads(kv.value).get("address", "")
        except (ValueError, AttributeError):
            continue
        if address and address != skip and address not in out:
            out.append(address)
    return out


def package_resolver(cache: PackageCache, controllers: Sequence[str], *,
                     token: str | None = None) -> PackageResolver:
    """A resolver for `weir.runtime_env.prepare`: a package's unpacked directory from
    `cache`, fetched from the first of `controllers` that has it when it is not there.
    Raises PackageError naming each controller tried and why it could not help (prepare
    puts the field's name in front)."""

    def resolve(package_hash: str) -> Path:
        check_hash(package_hash)
        if cache.has(package_hash):
            return cache.path(package_hash)
        problems = []
        for address in controllers:
            with auth.sync_channel(address, token=token) as channel:
                try:
                    path = fetch_package_blocking(channel, package_hash, cache)
                except (PackageError, grpc.RpcError) as exc:
                    problems.append(f"{address}: {_reason(exc)}")
                    continue
            log.info("package fetched", hash=package_hash, controller=address)
            return path
        raise PackageError(
            f"it is not in this machine's cache ({cache.root}) and no controller could send "
            f"it ({'; '.join(problems) or 'none is registered'}); deploy the config again "
            "to upload it")

    return resolve


async def app_runtime_env(store: Store, app: str) -> dict[str, Any] | None:
    """The runtime_env of `app`'s goal in etcd (None: it has none, or the app is gone)."""
    goal = await store.get(APPS_PREFIX + app)
    if goal is None:
        return None
    runtime_env: dict[str, Any] | None = json.loads(goal.value)["config"].get("runtime_env")
    return runtime_env


def without_packages(runtime_env: dict[str, Any] | None) -> dict[str, Any] | None:
    """`runtime_env` less the package URIs of its working_dir and py_modules: what a machine
    that does not run the replica (a pod agent) prepares for it."""
    if not names_packages(runtime_env):
        return runtime_env
    env = dict(runtime_env or {})
    if package_hash(env.get("working_dir")):
        del env["working_dir"]
    if env.get("py_modules"):
        env["py_modules"] = [m for m in env["py_modules"] if not package_hash(m)]
    return env


async def prepare_app_env(store: Store, app: str, cache: PackageCache | None, *,
                          fetch_packages: bool = True) -> PreparedEnv:
    """`app`'s runtime_env prepared on this machine: its package URIs fetched into `cache`
    from the controllers registered in etcd (none fetched with `fetch_packages` False, for a
    replica that fetches its own). Raises RuntimeEnvError (naming the field) or StoreError."""
    runtime_env = await app_runtime_env(store, app)
    if not fetch_packages:
        runtime_env = without_packages(runtime_env)
    resolve = None
    if cache is not None and names_packages(runtime_env):
        resolve = package_resolver(cache, await controller_addresses(store))
    return await asyncio.to_thread(prepare, runtime_env, resolve_package=resolve)


def _reason(exc: Exception) -> str:
    if isinstance(exc, grpc.Call):
        return f"{exc.code().name} {exc.details()}"
    return str(exc)
