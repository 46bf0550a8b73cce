"""Shipping a deploy's code: local working_dir / py_modules paths become package URIs.

Design. A config names code by path, and that path exists only where the deploy is typed.
Before the config is sent, each local path is packed (`pack`: deterministic, named by its
content) and uploaded to every controller, and the config is rewritten to name the package
(`weir://packages/<hash>`), so each node fetches the same bytes from a controller. All
controllers get it, not just the leader: a standby that takes over must be able to serve
it. A controller that has the hash already (the same code deployed again) receives nothing.

Everything is packed before anything is uploaded or sent, so a package over the limit is
refused with its size before the cluster changes. URLs (http(s)://, file://) and package
URIs pass through; a path that does not exist here passes through too (a machine image may
hold it on every node), and preparing the replica reports it if it is missing there.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog

from weir import auth
from weir.packages.archive import MAX_PACKAGE_BYTES, PackageError, PackageTooLarge, pack
from weir.packages.cache import PackageCache
from weir.packages.service import stat_package_blocking, upload_zip_blocking
from weir.runtime_env import is_url, package_hash, package_uri

log = structlog.get_logger("weir.packages")


@dataclass(frozen=True)
class LocalCode:
    """One runtime_env entry that names code by a local path."""

    app: str
    #: "working_dir" or "py_modules[i]".
    field: str
    path: str

    @property
    def is_module(self) -> bool:
        """A py_modules entry: packed under its own name, so it imports by that name."""
        return self.field.startswith("py_modules")


@dataclass(frozen=True)
class PackedCode:
    """A local path packed: its package's hash, zip and URI."""

    code: LocalCode
    hash: str
    data: bytes
    uri: str


def local_code(config: Mapping[str, Any]) -> list[LocalCode]:
    """Every working_dir and py_modules entry of a config's applications that is a local
    path (not a URL, not a package URI)."""
    out = []
    for app in config.get("applications") or []:
        env = app.get("runtime_env") or {}
        name = app.get("name", "default")
        entries = [("working_dir", env.get("working_dir"))]
        entries += [(f"py_modules[{i}]", m) for i, m in enumerate(env.get("py_modules") or [])]
        for field, value in entries:
            if isinstance(value, str) and value and not is_url(value) \
                    and not package_hash(value):
                out.append(LocalCode(name, field, value))
    return out


def with_packages(config: Mapping[str, Any], uris: Mapping[tuple[str, str], str]
                  ) -> dict[str, Any]:
    """A copy of `config` whose entries named in `uris` ((app, field) -> URI) hold the URI."""
    out = copy.deepcopy(dict(config))
    for app in out.get("applications") or []:
        env = app.get("runtime_env") or {}
        name = app.get("name", "default")
        if (name, "working_dir") in uris:
            env["working_dir"] = uris[(name, "working_dir")]
        modules = env.get("py_modules") or []
        for i in range(len(modules)):
            modules[i] = uris.get((name, f"py_modules[{i}]"), modules[i])
    return out


def pack_code(config: Mapping[str, Any], *, max_bytes: int = MAX_PACKAGE_BYTES
              ) -> tuple[dict[str, Any], list[PackedCode]]:
    """Pack every local code path of `config` that exists here: (the config rewritten to
    package URIs, the packages). Raises PackageTooLarge naming the app and field. Blocking.
    """
    packed: list[PackedCode] = []
    for code in local_code(config):
        path = Path(code.path).expanduser().resolve()
        if not path.exists():
            continue
        try:
            digest, data = pack(path, max_bytes=max_bytes, keep_name=code.is_module)
        except PackageTooLarge as exc:
            raise PackageTooLarge(f"application {code.app!r} runtime_env.{code.field}: {exc} "
                                  "(or raise the limit: --max-package-mb)") from exc
        except (PackageError, OSError) as exc:
            raise PackageError(f"application {code.app!r} runtime_env.{code.field}: "
                               f"{exc}") from exc
        uri = package_uri(digest, path.stem if code.is_module else "")
        packed.append(PackedCode(code, digest, data, uri))
    rewritten = with_packages(config, {(p.code.app, p.code.field): p.uri for p in packed})
    return rewritten, packed


def stage(packages: Iterable[PackedCode], cache: PackageCache) -> list[str]:
    """Put packages straight into a package cache on this machine (the embedded cluster's,
    which its controllers serve from and its node agent reads): the upload that follows
    finds them there and sends nothing. Returns the hashes staged. A package that cannot be
    staged is only logged: the upload then sends it as usual. Blocking.
    """
    staged = []
    for package in packages:
        try:
            cache.put(package.hash, [package.data], max_bytes=max(len(package.data), 1))
        except (PackageError, OSError) as exc:
            log.warning("cannot stage a package in the local cache; it will be uploaded",
                        hash=package.hash, cache=str(cache.root), error=str(exc))
            continue
        staged.append(package.hash)
    return staged


def upload(packages: Iterable[PackedCode], controllers: Iterable[str], *,
           token: str | None = None) -> dict[str, list[str]]:
    """Give each controller every package it lacks; returns controller -> hashes sent.

    A controller that cannot be reached is skipped (the others serve the package, and a
    leader fetches what it lacks from them); if none could take a package, PackageError.
    A controller's refusal (too large, wrong token) is a PackageError at once.
    """
    unique = {p.hash: p for p in packages}
    sent: dict[str, list[str]] = {}
    holders: dict[str, int] = dict.fromkeys(unique, 0)
    unreachable: list[str] = []
    for address in controllers:
        with auth.sync_channel(address, token=token) as channel:
            try:
                for digest, package in unique.items():
                    if stat_package_blocking(channel, digest) is None:
                        upload_zip_blocking(channel, digest, package.data)
                        sent.setdefault(address, []).append(digest)
                    holders[digest] += 1
            except grpc.RpcError as exc:
                call: grpc.Call = exc  # type: ignore[assignment]
                if call.code() != grpc.StatusCode.UNAVAILABLE:
                    raise PackageError(f"the controller at {address} refused a package: "
                                       f"{call.code().name}: {call.details()}") from exc
                unreachable.append(address)
                log.warning("cannot upload packages to a controller", address=address,
                            error=call.details())
    missing = [unique[h] for h, n in holders.items() if n == 0]
    if missing:
        raise PackageError(
            f"application {missing[0].code.app!r} runtime_env.{missing[0].code.field}: no "
            f"controller took its package (unreachable: {', '.join(unreachable) or 'none'})")
    return sent
