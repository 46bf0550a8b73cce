"""Packages on disk, and receiving one safely.

A received package is verified against its name before anyone can see it, then unpacked
and renamed into place whole: a reader never meets a half-written package, two receivers
of the same package do not clash, and a crash leaves only scratch (`.partial-*`) behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from weir.packages.archive import (
    MAX_PACKAGE_BYTES,
    PackageCorrupt,
    PackageNotFound,
    PackageTooLarge,
    check_hash,
    size_text,
    unpack,
)


class IncomingPackage:
    """A package being received into a cache: `write` its zip's bytes, then `finish`.

    Used as a context manager, it removes its scratch unless finished. Blocking: call its
    methods off the event loop.
    """

    def __init__(self, cache: PackageCache, package_hash: str, max_bytes: int) -> None:
        self.cache = cache
        self.hash = check_hash(package_hash)
        self.max_bytes = max_bytes
        self.size = 0
        cache.root.mkdir(parents=True, exist_ok=True)
        self._scratch = Path(tempfile.mkdtemp(dir=cache.root, prefix=".partial-"))
        self._zip = (self._scratch / "package.zip").open("wb")

    def write(self, data: bytes) -> None:
        """Append a chunk of the zip."""
        self.size += len(data)
        if self.size > self.max_bytes:
            raise PackageTooLarge(f"package {self.hash} is over the limit of "
                                  f"{size_text(self.max_bytes)} ({size_text(self.size)} "
                                  "received so far)")
        self._zip.write(data)

    def finish(self) -> Path:
        """Verify the zip against the hash, unpack it and move it into the cache; returns
        the unpacked directory. PackageCorrupt if it does not match."""
        self._zip.close()
        tree = self._scratch / "tree"
        try:
            with zipfile.ZipFile(self._scratch / "package.zip") as zf:
                actual = unpack(zf, tree)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise PackageCorrupt(f"package {self.hash} is not a valid zip: {exc}") from exc
        if actual != self.hash:
            raise PackageCorrupt(f"package {self.hash}: its content hashes to {actual}; it was "
                                 "damaged on the way or named wrongly, so it was not kept")
        final = self.cache.root / self.hash
        # The zip first: a package whose folder is there is a package that can be served.
        os.replace(self._scratch / "package.zip", self.cache.archive(self.hash))
        try:
            tree.rename(final)
        except OSError:
            if not final.is_dir():
                raise
            # Another receiver of the same hash won the race; its copy is the same content.
        self.abort()
        return final

    def abort(self) -> None:
        """Drop what was received."""
        self._zip.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> IncomingPackage:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()


class PackageCache:
    """Packages on disk: `root/<hash>/` unpacked, `root/<hash>.zip` to serve to others."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def has(self, package_hash: str) -> bool:
        """Whether the package is here, whole."""
        return (self.root / check_hash(package_hash)).is_dir()

    def can_serve(self, package_hash: str) -> bool:
        """Whether the package's zip is here to send to others. It goes into place before
        the unpacked folder, and outlives it: where a controller and a node agent share
        the cache (an embedded cluster), the agent's loss of the folder must not make the
        controller refuse to send the package again."""
        return self.archive(package_hash).is_file()

    def path(self, package_hash: str) -> Path:
        """The unpacked package; PackageNotFound if it is not here."""
        if not self.has(package_hash):
            raise PackageNotFound(f"package {package_hash} is not in {self.root}")
        return self.root / package_hash

    def archive(self, package_hash: str) -> Path:
        """Where the package's zip is (or would be) kept."""
        return self.root / f"{check_hash(package_hash)}.zip"

    def receive(self, package_hash: str, *,
                max_bytes: int = MAX_PACKAGE_BYTES) -> IncomingPackage:
        """Start receiving a package chunk by chunk (for a stream)."""
        return IncomingPackage(self, package_hash, max_bytes)

    def put(self, package_hash: str, chunks: Iterable[bytes], *,
            max_bytes: int = MAX_PACKAGE_BYTES) -> Path:
        """Store a package from its zip's bytes, verified against `package_hash`; returns
        the unpacked directory. Blocking: call it off the event loop."""
        if self.has(package_hash):
            return self.root / package_hash
        with self.receive(package_hash, max_bytes=max_bytes) as incoming:
            for data in chunks:
                incoming.write(data)
            return incoming.finish()
