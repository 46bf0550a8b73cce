"""A small app's tree on disk for the package tests, and reading one back."""

from __future__ import annotations

import os
from pathlib import Path


def make_tree(root: Path, big: int = 0) -> Path:
    """A small app: a package with a module, a script, caches that must not count and,
    with `big`, an incompressible data file of that many bytes."""
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "model.py").write_text("WEIGHTS = 3\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "app.py").write_text("from pkg.model import WEIGHTS\n")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0" * 10)
    (root / "stale.pyc").write_bytes(b"\0")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    if big:
        (root / "data.bin").write_bytes(os.urandom(big))
    return root


def files_of(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file under `root` -> (its bytes, whether it is executable)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), os.access(p, os.X_OK))
            for p in sorted(root.rglob("*")) if p.is_file()}
