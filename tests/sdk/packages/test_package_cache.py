"""The package cache: what it keeps is verified against its name and whole, or absent."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest

from tests.sdk.packages.trees import files_of, make_tree
from weir.packages import (
    PackageCache,
    PackageCorrupt,
    PackageError,
    PackageNotFound,
    PackageTooLarge,
    pack,
)


def test_put_verifies_and_unpacks(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    package_hash, data = pack(root)
    cache = PackageCache(tmp_path / "cache")
    assert not cache.has(package_hash)
    path = cache.put(package_hash, [data[:10], data[10:]])
    assert path == cache.path(package_hash) == tmp_path / "cache" / package_hash
    assert files_of(path) == {k: v for k, v in files_of(root).items()
                              if k in {"app.py", "pkg/__init__.py", "pkg/model.py", "run.sh"}}
    assert files_of(path)["run.sh"][1] is True
    assert cache.archive(package_hash).read_bytes() == data
    assert sorted(p.name for p in cache.root.iterdir()) == [package_hash, f"{package_hash}.zip"]


def test_put_refuses_content_that_does_not_match_its_name(tmp_path: Path) -> None:
    package_hash, _ = pack(make_tree(tmp_path / "a"))
    (tmp_path / "a" / "app.py").write_text("tampered\n")
    _, other = pack(tmp_path / "a")
    cache = PackageCache(tmp_path / "cache")
    with pytest.raises(PackageCorrupt, match=f"package {package_hash}: its content hashes"):
        cache.put(package_hash, [other])
    with pytest.raises(PackageCorrupt, match="not a valid zip"):
        cache.put(package_hash, [b"not a zip"])
    assert not cache.has(package_hash)
    assert list(cache.root.iterdir()) == []  # no scratch left behind


def test_put_refuses_paths_that_escape(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("../evil.py", "x")
    with pytest.raises(PackageCorrupt, match=re.escape("unsafe path '../evil.py'")):
        PackageCache(tmp_path / "cache").put("0" * 64, [out.getvalue()])
    assert not (tmp_path / "evil.py").exists()


def test_a_hash_must_look_like_one(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path / "cache")
    for bad in ("../../etc", "ABC", ""):
        with pytest.raises(PackageError, match="not 64 lowercase hex digits"):
            cache.has(bad)
    with pytest.raises(PackageNotFound):
        cache.path("0" * 64)


def test_put_refuses_past_its_limit(tmp_path: Path) -> None:
    package_hash, data = pack(make_tree(tmp_path / "a", big=4096))
    with pytest.raises(PackageTooLarge, match=r"over the limit of 1\.0 KiB \(\d\.\d KiB received"):
        PackageCache(tmp_path / "cache").put(package_hash, [data], max_bytes=1024)
