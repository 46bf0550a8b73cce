"""Generate the Python gRPC modules from protos/*.proto.

protoc names imports after the proto's path under its include root, so the protos are
laid out under weir/protos/ in a scratch dir; the generated files then import each other
as ``weir.protos.X`` and are copied back beside the sources.

Run: ``python protos/generate.py`` (``--check`` exits 1 if the committed files are stale).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over every proto in protos/ and write the modules into ``out_dir``."""
    from grpc_tools import protoc  # build-time dependency only

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        pkg = root / "weir" / "protos"
        pkg.mkdir(parents=True)
        protos = sorted(HERE.glob("*.proto"))
        for proto in protos:
            shutil.copy(proto, pkg / proto.name)
        rel = [f"weir/protos/{p.name}" for p in protos]
        rc = protoc.main(
            [
                "protoc",
                f"-I{root}",
                f"--python_out={root}",
                f"--pyi_out={root}",
                f"--grpc_python_out={root}",
                *rel,
            ]
        )
        if rc != 0:
            raise SystemExit(f"protoc failed with exit code {rc}")
        written = []
        for produced in sorted(pkg.glob("*_pb2*.py*")):
            target = out_dir / produced.name
            shutil.copy(produced, target)
            written.append(target)
        return written


def main() -> int:
    """CLI entry: generate in place, or with --check compare against a fresh generation."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    args = parser.parse_args()
    if not args.check:
        for path in generate(HERE):
            print(f"wrote {path.relative_to(HERE.parent)}")
        return 0
    with tempfile.TemporaryDirectory() as fresh:
        stale = [
            p.name
            for p in generate(Path(fresh))
            if not (HERE / p.name).exists() or not filecmp.cmp(p, HERE / p.name, shallow=False)
        ]
    if stale:
        print(f"stale generated code: {', '.join(stale)}; run python protos/generate.py")
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
