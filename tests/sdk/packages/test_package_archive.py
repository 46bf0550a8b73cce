"""Packing: the same content always makes the same package, named by that content."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from tests.sdk.packages.trees import make_tree
from weir.packages import PackageError, PackageTooLarge, pack


def test_same_content_same_package(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a")
    b = make_tree(tmp_path / "b")
    os.utime(b / "app.py", (1_000_000, 1_000_000))  # other timestamps do not count
    assert pack(a) == pack(b)
    (b / "app.py").write_text("changed\n")
    assert pack(a)[0] != pack(b)[0]


def test_the_executable_bit_counts(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a")
    before = pack(a)[0]
    (a / "run.sh").chmod(0o644)
    assert pack(a)[0] != before


def test_caches_and_version_control_are_left_out(tmp_path: Path) -> None:
    _, data = pack(make_tree(tmp_path / "a"))
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert names == ["app.py", "pkg/__init__.py", "pkg/model.py", "run.sh"]


def test_what_does_not_shrink_is_stored(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a", big=200 * 1024)
    (root / "big.py").write_text("x = 1\n" * 20_000)
    _, data = pack(root)
    kinds = {i.filename: i.compress_type for i in zipfile.ZipFile(io.BytesIO(data)).infolist()}
    assert kinds["data.bin"] == zipfile.ZIP_STORED
    assert kinds["big.py"] == kinds["app.py"] == zipfile.ZIP_DEFLATED
    assert len(data) < 200 * 1024 + 4096


def test_keep_name_and_single_files(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    _, data = pack(root / "pkg", keep_name=True)
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["pkg/__init__.py", "pkg/model.py"]
    _, data = pack(root / "app.py")
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["app.py"]
    with pytest.raises(PackageError, match="neither a directory nor a file"):
        pack(root / "missing")


def test_pack_refuses_past_the_limit_naming_size_and_limit(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a", big=300 * 1024)
    with pytest.raises(PackageTooLarge, match=r"5 files hold 300\.1 KiB, more than the limit "
                                              r"of 100\.0 KiB zipped"):
        pack(root, max_bytes=100 * 1024)
