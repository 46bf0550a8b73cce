"""What a package is: a zip of code made the same way every time, named by its content.

Design. The name is a hash of the content (each file's path, executable bit and bytes),
not of the zip's bytes: deflate's output differs between zlib builds (zlib-ng, for one),
and the same code must have one name on every machine, or the leader would see a new
version where nothing changed. `unpack` recomputes that name from what it unpacks, so a
receiver verifies a package with the same rule that named it.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zipfile
import zlib
from io import BytesIO
from pathlib import Path, PurePosixPath

from weir.runtime_env import NOT_CODE, NOT_CODE_SUFFIXES

#: Ray's limit on a working_dir or py_modules package.
MAX_PACKAGE_BYTES = 500 * 2**20
#: An upload of MAX_PACKAGE_BYTES may not unpack to more than this: a zip bomb must not
#: fill the disk, and code trees are far smaller.
MAX_UNPACKED_BYTES = 4 * 2**30
#: Each gRPC message carries this much of a package; gRPC's flow control paces them.
CHUNK_BYTES = 2**20
#: Fast deflate: code is small, and what is big is mostly incompressible. A file whose
#: first PROBE_BYTES do not shrink below STORE_RATIO is stored as is.
COMPRESS_LEVEL = 1
PROBE_BYTES = 64 * 1024
STORE_RATIO = 0.9
#: Zip entries get this timestamp, so the same files always give the same zip.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_HASH = re.compile(r"[0-9a-f]{64}")


class PackageError(Exception):
    """A package could not be made, sent or received; the message says why."""


class PackageTooLarge(PackageError):
    """A package is over the size limit."""


class PackageCorrupt(PackageError):
    """A package's content does not match its name, or it is not a valid package."""


class PackageNotFound(PackageError):
    """No package of that hash here."""


def check_hash(package_hash: str) -> str:
    """`package_hash` if it is a package's name (64 hex digits), else PackageError."""
    if not isinstance(package_hash, str) or not _HASH.fullmatch(package_hash):
        raise PackageError(f"package hash {package_hash!r} is not 64 lowercase hex digits "
                           "(a sha256 from weir.packages.pack)")
    return package_hash


class ContentHash:
    """The package's name: sha256 over each file's path, executable bit and sha256, in
    path order. A file's own digest is fixed-size, so no two trees hash alike by framing."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def add(self, name: str, executable: bool, file_digest: bytes) -> None:
        """Count one file (in path order)."""
        self._digest.update(name.encode() + b"\0" + (b"x" if executable else b"-"))
        self._digest.update(file_digest)

    def hexdigest(self) -> str:
        """The package's name."""
        return self._digest.hexdigest()


def _code_files(path: Path, keep_name: bool) -> list[tuple[str, Path]]:
    """(name in the package, file) for every file of code under `path`, sorted by name."""
    if path.is_file():
        return [(path.name, path)]
    if not path.is_dir():
        raise PackageError(f"cannot package {str(path)!r}: it is neither a directory nor a file")
    prefix = f"{path.name}/" if keep_name else ""
    files = []
    # Symlinked folders are not followed (a link to a parent would never end); symlinked
    # files are packaged as the file they point to.
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d not in NOT_CODE]
        for name in filenames:
            if not name.endswith(NOT_CODE_SUFFIXES):
                file = Path(dirpath) / name
                if file.is_file():
                    files.append((prefix + file.relative_to(path).as_posix(), file))
    return sorted(files)


def pack(path: Path, *, max_bytes: int = MAX_PACKAGE_BYTES,
         keep_name: bool = False) -> tuple[str, bytes]:
    """Zip a directory's code (or one module file) into a package: returns (hash, zip).

    Deterministic: entries sorted by path, one timestamp, modes reduced to executable or
    not; __pycache__, .git, *.pyc and the like are skipped (`weir.runtime_env.NOT_CODE`).
    A directory's files sit at the zip's root (a working_dir), or under the directory's
    own name with `keep_name` (a py_modules package, importable by that name); a file sits
    at the root. Raises PackageTooLarge past `max_bytes` zipped. Blocking: call it off the
    event loop.
    """
    path = Path(path).expanduser()
    files = _code_files(path, keep_name)
    out = BytesIO()
    content = ContentHash()
    with zipfile.ZipFile(out, "w") as zf:
        for name, file in files:
            executable = bool(file.stat().st_mode & stat.S_IXUSR)
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.create_system = 3  # unix, wherever it was made, so modes mean the same
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            file_digest = hashlib.sha256()
            with file.open("rb") as src:
                data = src.read(CHUNK_BYTES)
                info.compress_type = _compression(data)
                # ZipFile.open ignores the archive's compresslevel (3.10-3.13 read this).
                info._compresslevel = COMPRESS_LEVEL  # type: ignore[attr-defined]
                # Sizes are unknown until written: zip64 keeps a >4 GiB file valid.
                with zf.open(info, "w", force_zip64=True) as dst:
                    while data:
                        file_digest.update(data)
                        dst.write(data)
                        if out.tell() > max_bytes:
                            raise _too_large(path, files, max_bytes)
                        data = src.read(CHUNK_BYTES)
            content.add(name, executable, file_digest.digest())
    data = out.getvalue()
    if len(data) > max_bytes:
        raise _too_large(path, files, max_bytes)
    return content.hexdigest(), data


def _compression(head: bytes) -> int:
    """Deflate, unless the file's first bytes do not shrink (weights, archives, images):
    deflating those costs ~20 ms a MiB here and saves nothing."""
    sample = head[:PROBE_BYTES]
    if len(sample) >= PROBE_BYTES and \
            len(zlib.compress(sample, COMPRESS_LEVEL)) > STORE_RATIO * len(sample):
        return zipfile.ZIP_STORED
    return zipfile.ZIP_DEFLATED


def _too_large(path: Path, files: list[tuple[str, Path]], max_bytes: int) -> PackageTooLarge:
    total = sum(file.stat().st_size for _, file in files)
    return PackageTooLarge(
        f"cannot package {str(path)!r}: its {len(files)} files hold {size_text(total)}, more "
        f"than the limit of {size_text(max_bytes)} zipped; move data files out of it (load "
        "them from storage at start-up)")


def size_text(size: int) -> str:
    """A size in the unit that reads best: 300.1 KiB, 2.0 MiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def unpack(zf: zipfile.ZipFile, tree: Path) -> str:
    """Unpack a package's zip into `tree`; returns its content hash, to compare with its
    name. Raises PackageCorrupt for a path that would escape `tree` or a file listed twice,
    PackageTooLarge past MAX_UNPACKED_BYTES. Blocking."""
    infos = sorted((i for i in zf.infolist() if not i.is_dir()), key=lambda i: i.filename)
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise PackageCorrupt("the package lists a file twice")
    unpacked = sum(i.file_size for i in infos)
    if unpacked > MAX_UNPACKED_BYTES:
        raise PackageTooLarge(f"the package would unpack to {size_text(unpacked)}, over the "
                              f"limit of {size_text(MAX_UNPACKED_BYTES)}")
    content = ContentHash()
    for info in infos:
        parts = PurePosixPath(info.filename).parts
        if info.filename.startswith("/") or "\\" in info.filename or ".." in parts or not parts:
            raise PackageCorrupt(f"the package has an unsafe path {info.filename!r}")
        executable = bool((info.external_attr >> 16) & stat.S_IXUSR)
        target = tree.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        file_digest = hashlib.sha256()
        with zf.open(info) as src, target.open("wb") as dst:
            while data := src.read(CHUNK_BYTES):
                file_digest.update(data)
                dst.write(data)
        target.chmod(0o755 if executable else 0o644)
        content.add(info.filename, executable, file_digest.digest())
    return content.hexdigest()
