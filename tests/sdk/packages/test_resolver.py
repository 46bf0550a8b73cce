"""Where code runs: a package URI resolves through this machine's cache, fetched from the
first controller that has it (real Packages servers on loopback)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.sdk.packages.servers import dead_address, package_servers
from tests.sdk.packages.trees import files_of, make_tree
from weir.etcd.keys import APPS_PREFIX, CONTROLLERS_PREFIX
from weir.etcd.memory_store import MemoryStore
from weir.packages import PackageCache, PackageError, pack
from weir.packages.resolver import (
    controller_addresses,
    default_packages_dir,
    package_resolver,
    prepare_app_env,
    without_packages,
)
from weir.runtime_env import PreparedEnv, package_uri


def test_a_cached_package_needs_no_controller(tmp_path: Path) -> None:
    digest, data = pack(make_tree(tmp_path / "code"))
    cache = PackageCache(tmp_path / "node")
    cache.put(digest, [data])
    assert package_resolver(cache, [])(digest) == cache.path(digest)


def test_a_missing_package_comes_from_the_first_controller_that_has_it(tmp_path: Path) -> None:
    code = make_tree(tmp_path / "code")
    digest, data = pack(code)
    node = PackageCache(tmp_path / "node")
    with package_servers(tmp_path, 2, token="t") as (lacking, holding):
        holding.cache.put(digest, [data])
        resolve = package_resolver(node, [dead_address(), lacking.address, holding.address],
                                   token="t")
        path = resolve(digest)
        assert path == node.path(digest)
        assert files_of(path) == files_of(holding.cache.path(digest))
        assert lacking.calls == [f"Fetch {digest[:8]}"]
        # From now on the node's own copy serves.
        assert resolve(digest) == path
        assert holding.calls == [f"Fetch {digest[:8]}"]


def test_no_controller_has_it_names_each_and_why(tmp_path: Path) -> None:
    digest, _ = pack(make_tree(tmp_path / "code"))
    node = PackageCache(tmp_path / "node")
    with package_servers(tmp_path, 1) as (lacking,):
        dead = dead_address()
        with pytest.raises(PackageError) as failed:
            package_resolver(node, [dead, lacking.address])(digest)
    message = str(failed.value)
    assert f"not in this machine's cache ({node.root})" in message
    assert f"{dead}: UNAVAILABLE" in message
    assert f"{lacking.address}: package {digest} is not on this server" in message
    assert "deploy the config again" in message
    assert not node.has(digest)
    with pytest.raises(PackageError, match="is not 64 lowercase hex digits"):
        package_resolver(node, [])("../../etc")


def test_controller_addresses_come_from_etcd() -> None:
    async def main() -> list[str]:
        store = MemoryStore()
        for cid, address in (("a", "10.0.0.1:9500"), ("b", "10.0.0.2:9500")):
            await store.put(CONTROLLERS_PREFIX + cid,
                            json.dumps({"id": cid, "address": address}).encode())
        await store.put(CONTROLLERS_PREFIX + "junk", b"not json")
        return await controller_addresses(store, skip="10.0.0.1:9500")

    assert asyncio.run(main()) == ["10.0.0.2:9500"]


def test_default_packages_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WEIR_HOME", str(tmp_path))
    assert default_packages_dir() == tmp_path / "packages"
    monkeypatch.delenv("WEIR_HOME")
    assert default_packages_dir().name == "weir-packages"


def test_a_pod_agent_prepares_an_app_without_its_packages() -> None:
    digest = "a" * 64
    env = {"working_dir": package_uri(digest), "env_vars": {"A": "1"},
           "py_modules": [package_uri(digest, "mod"), "/opt/local_mod"]}
    assert without_packages(env) == {"env_vars": {"A": "1"}, "py_modules": ["/opt/local_mod"]}
    assert env["working_dir"] == package_uri(digest)  # the caller's dict is left alone
    assert without_packages({"working_dir": "/srv/app"}) == {"working_dir": "/srv/app"}
    assert without_packages(None) is None


def test_an_apps_env_is_prepared_from_etcd_and_a_controller(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a node agent and a replica pod both do: the app's runtime_env from its goal in
    etcd, its package fetched from a controller listed there."""
    code = make_tree(tmp_path / "code")
    digest, data = pack(code)
    goal = {"config": {"runtime_env": {"working_dir": package_uri(digest),
                                       "env_vars": {"MODE": "pod"}}}}

    async def main(address: str, fetch: bool) -> PreparedEnv:
        store = MemoryStore()
        await store.put(APPS_PREFIX + "app", json.dumps(goal).encode())
        await store.put(CONTROLLERS_PREFIX + "c", json.dumps({"address": address}).encode())
        return await prepare_app_env(store, "app", PackageCache(tmp_path / "pod"),
                                     fetch_packages=fetch)

    with package_servers(tmp_path, 1, token="t") as (holding,):
        holding.cache.put(digest, [data])
        monkeypatch.setenv("WEIR_TOKEN", "t")  # a pod's, from the token Secret
        env = asyncio.run(main(holding.address, True))
        agent_env = asyncio.run(main(holding.address, False))
    assert env.cwd == str(tmp_path / "pod" / digest) and env.sys_paths == [env.cwd]
    assert files_of(Path(env.cwd))["app.py"] == files_of(code)["app.py"]
    assert env.env_vars == {"MODE": "pod"}
    assert agent_env.cwd is None and agent_env.env_vars == {"MODE": "pod"}
    assert holding.calls == [f"Fetch {digest[:8]}"]  # the agent fetched nothing
