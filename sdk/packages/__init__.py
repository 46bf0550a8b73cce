"""Code packages: how an application's code reaches replicas on other machines.

A directory (a runtime_env working_dir) or module (py_modules) is zipped the same way every
time and named by its content (`archive`); controllers keep packages on disk (`cache`) and
serve them over gRPC in chunks (`service`), since etcd refuses values over 1.5 MiB: etcd
holds only a package's name.
"""

from weir.packages.archive import (
    CHUNK_BYTES,
    MAX_PACKAGE_BYTES,
    PackageCorrupt,
    PackageError,
    PackageNotFound,
    PackageTooLarge,
    check_hash,
    pack,
)
from weir.packages.cache import IncomingPackage, PackageCache
from weir.packages.service import PackageService, fetch_package, upload_package

__all__ = [
    "CHUNK_BYTES",
    "MAX_PACKAGE_BYTES",
    "IncomingPackage",
    "PackageCache",
    "PackageCorrupt",
    "PackageError",
    "PackageNotFound",
    "PackageService",
    "PackageTooLarge",
    "check_hash",
    "fetch_package",
    "pack",
    "upload_package",
]
