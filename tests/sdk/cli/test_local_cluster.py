"""LocalCluster's own bookkeeping, without starting processes (the e2e tests start them)."""

from __future__ import annotations

from pathlib import Path

from weir.cli.local_cluster import LocalCluster


def test_packages_dir_is_in_the_temp_dir_start_will_use_and_stop_removes_it() -> None:
    cluster = LocalCluster()
    packages = cluster.packages_dir
    assert packages.name == "packages" and packages.parent.is_dir()
    assert cluster.packages_dir == packages  # one temp dir, made once
    cluster.stop()  # a start that never came: nothing is left behind
    assert not packages.parent.exists()


def test_packages_dir_persists_beside_etcd_data(tmp_path: Path) -> None:
    cluster = LocalCluster(etcd_data_dir=str(tmp_path / "etcd"))
    assert cluster.packages_dir == tmp_path / "packages"
