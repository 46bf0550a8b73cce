"""mypy over the repository as it is, with every error at the file's real path.

The folders are not named like the modules they hold: pyproject.toml's
`[tool.setuptools] package-dir` installs sdk/ as `weir` and controller/, proxy/, replica/
and protos/ as its subpackages. mypy has no such mapping: given the folders it names the
modules `sdk.cli...` and `controller...`, so every `import weir...` is unresolved (and,
with ignore_missing_imports, silently Any). Neither does it follow setuptools' default
editable install, an import hook (`__editable___weir_*_finder.py`); a strict editable
install or a tree of symlinks makes mypy see `weir`, but then its errors name the link
paths, not the files one edits, and the former needs a non-default `pip install`.

So this script finds the sources the way `mypy sdk controller ...` would (the config's
`exclude`, .pyi beside .py), renames each module after package-dir, and hands the list to
mypy's build: imports of `weir.*` resolve among the sources, and errors name sdk/...,
controller/... . It runs after a plain `pip install -e '.[dev]'`, as CI does. It needs
mypy >= 2.0: before, `from weir import context` became a dependency on the submodule only
if mypy's finder could locate it on disk, so checking order broke and false "Module has no
attribute" errors came out (mypy 1.10, measured); 2.0 also accepts the modules it was given.

Usage: python .ci/typecheck.py [mypy options]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path, PurePosixPath

from mypy import util
from mypy.fscache import FileSystemCache
from mypy.main import process_options, run_build
from mypy.modulefinder import BuildSource
from mypy.version import __version__ as mypy_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # mypy itself depends on tomli before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def package_dirs(pyproject: Path) -> dict[str, str]:
    """Installed package name -> its folder in the repository, from setuptools' package-dir."""
    with open(pyproject, "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    return {name: str(PurePosixPath(folder)) for name, folder in setuptools["package-dir"].items()}


def module_name(path: str, packages: dict[str, str]) -> str:
    """The module a source file is imported as once installed (`sdk/etcd/store.py` ->
    `weir.etcd.store`); the deepest package folder holding the file decides."""
    file = PurePosixPath(path)
    owners = [(name, PurePosixPath(folder)) for name, folder in packages.items()
              if file.is_relative_to(folder)]
    if not owners:
        raise SystemExit(f"{path} is in no package of pyproject.toml's package-dir")
    name, folder = max(owners, key=lambda owner: len(owner[1].parts))
    parts = list(file.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([name, *parts])


def main(argv: list[str]) -> int:
    """Type-check every package folder; returns mypy's exit code (0 clean, 1 errors)."""
    if int(mypy_version.split(".")[0]) < 2:
        raise SystemExit(f"mypy {mypy_version} is too old for .ci/typecheck.py (needs >= 2.0, "
                         "see its docstring); run pip install -e '.[dev]'")
    packages = package_dirs(ROOT / "pyproject.toml")
    # Top folders only: a subpackage's folder inside another's would be listed twice.
    folders = sorted({f for f in packages.values()
                      if not any(f != o and PurePosixPath(f).is_relative_to(o)
                                 for o in packages.values())})
    started = time.time()
    fscache = FileSystemCache()
    found, options = process_options(
        ["--config-file", "pyproject.toml", *argv, *folders], fscache=fscache)
    sources = [BuildSource(s.path, module_name(s.path, packages)) for s in found
               if s.path is not None]
    _, messages, blockers = run_build(sources, options, fscache, started, sys.stdout,
                                      sys.stderr)
    formatter = util.FancyFormatter(sys.stdout, sys.stderr, options.hide_error_codes)
    errors, notes, files = util.count_stats(messages)
    if errors:
        print(formatter.format_error(errors, files, len(sources), blockers=blockers,
                                     use_color=options.color_output))
    else:
        print(formatter.format_success(len(sources), options.color_output))
    if messages and notes < len(messages):
        return 2 if blockers else 1
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)  # source paths, the config and the cache are relative to the root
    sys.exit(main(sys.argv[1:]))
