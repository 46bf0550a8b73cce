"""runtime_env: where an application's code comes from and what environment it runs in.

Supported: `working_dir` and `py_modules` as local paths, URLs of zip archives (http(s)://
and file://, downloaded once and cached by content hash) or Weir package URIs
(`weir://packages/<hash>`: code a deploy packed and uploaded to the controllers, see
`weir.packages`); `env_vars`. `pip` is accepted and reported as not installed by Weir
(bring an image or venv with the packages).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A package's URI: this prefix, its hash, and for a py_modules entry "/<module name>" (so
#: `weir config` shows what it holds). The hash alone names the content.
PACKAGE_URI_PREFIX = "weir://packages/"
_PACKAGE_URI = re.compile(re.escape(PACKAGE_URI_PREFIX) + r"([0-9a-f]{64})(?:/([^/]+))?")

#: Finds a package by hash and returns its unpacked directory, or raises an exception
#: whose message says why it cannot. Called in a worker thread.
PackageResolver = Callable[[str], Path]


def package_uri(package_hash: str, module_name: str = "") -> str:
    """The URI a runtime_env entry holds for a package (`module_name` for py_modules)."""
    return PACKAGE_URI_PREFIX + package_hash + (f"/{module_name}" if module_name else "")


def package_hash(value: object) -> str | None:
    """The hash a package URI names, or None if `value` is not a package URI."""
    match = _PACKAGE_URI.fullmatch(value) if isinstance(value, str) else None
    return match.group(1) if match else None


def names_packages(runtime_env: dict[str, Any] | None) -> bool:
    """Whether a runtime_env's working_dir or py_modules name a package."""
    env = runtime_env or {}
    return any(package_hash(v) for v in [env.get("working_dir"), *(env.get("py_modules") or [])])


class RuntimeEnvError(ValueError):
    """A runtime_env entry could not be prepared; the message names it."""


@dataclass
class PreparedEnv:
    """What a process needs to run an app's code."""

    cwd: str | None = None
    sys_paths: list[str] = field(default_factory=list)
    env_vars: dict[str, str] = field(default_factory=dict)
    #: The container image to run it in (Ray's `image_uri`; read where replicas are pods,
    #: ignored by local processes).
    image_uri: str = ""


def default_cache_dir() -> Path:
    """Where downloaded archives are kept (WEIR_RUNTIME_ENV_CACHE, else a temp dir)."""
    path = os.environ.get("WEIR_RUNTIME_ENV_CACHE") or os.path.join(
        tempfile.gettempdir(), "weir-runtime-env")
    return Path(path)


def is_url(value: str) -> bool:
    """Whether a runtime_env entry is a URL of a zip archive (http(s)://, file://)."""
    return urllib.parse.urlparse(value).scheme in ("http", "https", "file")


def fetch_archive(url: str, cache_dir: Path, field_name: str) -> Path:
    """Download a zip archive once; returns the extracted directory (the archive's single top
    folder if it has exactly one)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            data = resp.read()
    except Exception as exc:
        raise RuntimeEnvError(f"runtime_env.{field_name}: cannot download {url!r}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()[:24]
    target = cache_dir / digest
    if not target.exists():
        scratch = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".partial-"))
        archive = scratch / "archive.zip"
        archive.write_bytes(data)
        try:
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    if name.startswith("/") or ".." in Path(name).parts:
                        raise RuntimeEnvError(
                            f"runtime_env.{field_name}: archive {url!r} has unsafe path {name!r}")
                zf.extractall(scratch / "x")
        except zipfile.BadZipFile as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise RuntimeEnvError(
                f"runtime_env.{field_name}: {url!r} is not a zip archive") from exc
        try:
            (scratch / "x").rename(target)
        except OSError:
            pass  # another process won the race; its copy is identical
        shutil.rmtree(scratch, ignore_errors=True)
    entries = [p for p in target.iterdir() if not p.name.startswith("__MACOSX")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return target


def _resolve(uri: str, resolve_package: PackageResolver | None, field_name: str) -> Path:
    """A package URI's unpacked directory, through the injected resolver."""
    if resolve_package is None:
        raise RuntimeEnvError(f"runtime_env.{field_name}: {uri!r} is a Weir package, and this "
                              "process has no package cache to find it in")
    try:
        return resolve_package(package_hash(uri) or "")
    except Exception as exc:  # the resolver is injected: any failure is this field's
        raise RuntimeEnvError(f"runtime_env.{field_name}: cannot get package {uri!r}: "
                              f"{exc}") from exc


def prepare(runtime_env: dict[str, Any] | None, cache_dir: Path | None = None,
            resolve_package: PackageResolver | None = None) -> PreparedEnv:
    """Resolve a runtime_env into a working directory, sys.path entries and env vars.

    Package URIs are found through `resolve_package` (a node's or controller's package
    cache); without one they are an error. Blocking: call it off the event loop.
    """
    env = runtime_env or {}
    cache = cache_dir or default_cache_dir()
    out = PreparedEnv(env_vars={str(k): str(v) for k, v in (env.get("env_vars") or {}).items()},
                      image_uri=str(env.get("image_uri") or ""))
    working_dir = env.get("working_dir")
    if working_dir:
        if package_hash(working_dir):
            path = _resolve(working_dir, resolve_package, "working_dir")
        elif is_url(working_dir):
            path = fetch_archive(working_dir, cache, "working_dir")
        else:
            path = Path(working_dir).expanduser().resolve()
        if not path.is_dir():
            raise RuntimeEnvError(f"runtime_env.working_dir: {working_dir!r} is not a directory")
        out.cwd = str(path)
        out.sys_paths.append(str(path))
    for i, module in enumerate(env.get("py_modules") or []):
        if package_hash(module):
            # The package holds the module under its own name: its root goes on sys.path.
            out.sys_paths.append(str(_resolve(module, resolve_package, f"py_modules[{i}]")))
            continue
        if is_url(module):
            out.sys_paths.append(str(fetch_archive(module, cache, f"py_modules[{i}]")))
            continue
        path = Path(module).expanduser().resolve()
        if not path.exists():
            raise RuntimeEnvError(f"runtime_env.py_modules[{i}]: {module!r} does not exist")
        out.sys_paths.append(str(path.parent))
    return out


#: Never part of code: caches and version control (folders), compiled bytecode (files).
#: Shared with `weir.packages`, so a package holds what the code digest hashes.
#: Virtual environments are skipped too: they are not the app's code, and a venv inside a
#: working_dir would make every deploy pack (and every node fetch) hundreds of MiB.
NOT_CODE = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache",
                      ".ruff_cache", ".tox", ".nox", ".venv", "venv", "node_modules"})
NOT_CODE_SUFFIXES = (".pyc", ".pyo")


def code_digest(runtime_env: dict[str, Any] | None) -> str:
    """A content hash of the local code a runtime_env names (working_dir and py_modules
    paths; a URL counts by itself). It is part of an app's version, so deploying the same
    config after the code changed rolls the change out, as Ray does by hashing a
    working_dir's content into its package URI. A package URI counts by itself: it is
    named by its content already. Blocking: call it off the event loop."""
    env = runtime_env or {}
    entries = [env.get("working_dir"), *(env.get("py_modules") or [])]
    digest = hashlib.sha256()
    for entry in filter(None, entries):
        digest.update(f"{entry}\0".encode())
        if isinstance(entry, str) and not is_url(entry) and not package_hash(entry):
            _hash_tree(Path(entry).expanduser(), digest)
    return digest.hexdigest()[:16] if any(entries) else ""


def _hash_tree(root: Path, digest: Any) -> None:
    if root.is_file():
        digest.update(root.read_bytes())
        return
    if not root.is_dir():
        return  # prepare() reports the missing path when a replica is started
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in NOT_CODE)
        for name in sorted(filenames):
            if name.endswith(NOT_CODE_SUFFIXES):
                continue
            path = Path(dirpath) / name
            digest.update(f"{path.relative_to(root)}\0".encode())
            try:
                digest.update(path.read_bytes())
            except OSError:
                continue


def process_env(prepared: PreparedEnv, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process running the app's code."""
    env = dict(os.environ if base is None else base)
    env.update(prepared.env_vars)
    if prepared.sys_paths:
        env["PYTHONPATH"] = os.pathsep.join(
            [*prepared.sys_paths, *filter(None, [env.get("PYTHONPATH")])])
    return env
