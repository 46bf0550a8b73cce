"""The deploy side: local code paths become package URIs, uploaded to every controller
(real Packages servers on loopback) only where missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.sdk.packages.servers import dead_address, package_servers
from tests.sdk.packages.trees import files_of, make_tree
from weir.packages import PackageCache, PackageError, PackageTooLarge, pack
from weir.packages.shipping import (
    LocalCode,
    local_code,
    pack_code,
    stage,
    upload,
    with_packages,
)
from weir.runtime_env import package_hash, package_uri


def config_of(**runtime_env: Any) -> dict[str, Any]:
    return {"applications": [{"name": "shop", "import_path": "app:app",
                              "runtime_env": runtime_env}]}


def test_local_code_lists_paths_but_not_urls_or_packages() -> None:
    uri = package_uri("a" * 64)
    config = config_of(working_dir="./code", py_modules=[
        "https://example.com/lib.zip", "/opt/libs/helpers", uri, "file:///tmp/x.zip"])
    assert local_code(config) == [LocalCode("shop", "working_dir", "./code"),
                                  LocalCode("shop", "py_modules[1]", "/opt/libs/helpers")]
    assert local_code(config_of(working_dir=uri)) == []
    assert local_code({"applications": [{"import_path": "a:b"}]}) == []


def test_with_packages_rewrites_only_the_named_entries_and_copies() -> None:
    config = config_of(working_dir="./code", py_modules=["/a", "/b"], env_vars={"X": "1"})
    out = with_packages(config, {("shop", "working_dir"): "weir://packages/w",
                                 ("shop", "py_modules[1]"): "weir://packages/b/b"})
    assert out["applications"][0]["runtime_env"] == {
        "working_dir": "weir://packages/w", "py_modules": ["/a", "weir://packages/b/b"],
        "env_vars": {"X": "1"}}
    assert config["applications"][0]["runtime_env"]["working_dir"] == "./code"


def test_pack_code_names_each_package_by_its_content(tmp_path: Path) -> None:
    code = make_tree(tmp_path / "code")
    lib = make_tree(tmp_path / "helpers")
    config = config_of(working_dir=str(code), py_modules=[str(lib), "https://x/y.zip"])
    rewritten, packages = pack_code(config)
    env = rewritten["applications"][0]["runtime_env"]
    assert env["working_dir"] == package_uri(pack(code)[0])
    # A py_module is packed under its own name, and its URI says which module it holds.
    assert env["py_modules"] == [package_uri(pack(lib, keep_name=True)[0], "helpers"),
                                 "https://x/y.zip"]
    assert [package_hash(p.uri) for p in packages] == [p.hash for p in packages]
    # The same code again: the same names (so a redeploy changes nothing).
    assert pack_code(config)[0] == rewritten


def test_a_path_missing_here_is_sent_as_it_is(tmp_path: Path) -> None:
    config = config_of(working_dir=str(tmp_path / "baked-into-the-image"))
    assert pack_code(config) == (config, [])


def test_a_package_over_the_limit_is_refused_with_its_size_and_field(tmp_path: Path) -> None:
    code = make_tree(tmp_path / "code", big=300_000)
    with pytest.raises(PackageTooLarge) as refused:
        pack_code(config_of(working_dir=str(code)), max_bytes=100_000)
    message = str(refused.value)
    assert message.startswith("application 'shop' runtime_env.working_dir: cannot package")
    assert "KiB" in message and "--max-package-mb" in message


def test_upload_gives_each_controller_only_what_it_lacks(tmp_path: Path) -> None:
    code = make_tree(tmp_path / "code", big=3 * 2**20)
    _, packages = pack_code(config_of(working_dir=str(code)))
    digest = packages[0].hash
    with package_servers(tmp_path, 2, token="s3cret") as (a, b):
        b.cache.put(digest, [packages[0].data])
        sent = upload(packages, [a.address, b.address], token="s3cret")
        assert sent == {a.address: [digest]}
        assert files_of(a.cache.path(digest)) == files_of(b.cache.path(digest))
        assert b.calls == [f"Stat {digest[:8]}"]
        # Deployed again: both have it; nothing is sent.
        assert upload(packages, [a.address, b.address], token="s3cret") == {}
        assert a.calls == [f"Stat {digest[:8]}", "Upload", f"Stat {digest[:8]}"]


def test_staged_packages_are_served_and_not_uploaded_again(tmp_path: Path) -> None:
    # `weir run` stages its code in the embedded cluster's cache while the cluster starts:
    # the controller serving that cache then has it, and the upload only asks.
    code = make_tree(tmp_path / "code", big=2 * 2**20)
    _, packages = pack_code(config_of(working_dir=str(code)))
    digest = packages[0].hash
    with package_servers(tmp_path, 1) as (a,):
        assert stage(packages, a.cache) == [digest]
        assert (a.cache.path(digest) / "app.py").read_bytes() == (code / "app.py").read_bytes()
        assert upload(packages, [a.address]) == {}
        assert a.calls == [f"Stat {digest[:8]}"]


def test_a_package_that_cannot_be_staged_is_left_to_the_upload(tmp_path: Path) -> None:
    code = make_tree(tmp_path / "code")
    _, packages = pack_code(config_of(working_dir=str(code)))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache would be")
    assert stage(packages, PackageCache(blocker)) == []
    with package_servers(tmp_path, 1) as (a,):
        assert upload(packages, [a.address]) == {a.address: [packages[0].hash]}


def test_upload_skips_an_unreachable_controller_but_not_a_refusal(tmp_path: Path) -> None:
    code = make_tree(tmp_path / "code")
    _, packages = pack_code(config_of(working_dir=str(code)))
    with package_servers(tmp_path, 1, token="s3cret") as (a,):
        assert upload(packages, [dead_address(), a.address], token="s3cret") == {
            a.address: [packages[0].hash]}
        with pytest.raises(PackageError, match=f"the controller at {a.address} refused a "
                                               "package: UNAUTHENTICATED"):
            upload(packages, [a.address], token="wrong")
    with pytest.raises(PackageError, match=r"runtime_env.working_dir: no controller took its "
                                           r"package \(unreachable: 127.0.0.1:"):
        upload(packages, [dead_address()])
