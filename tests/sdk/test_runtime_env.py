"""runtime_env: package URIs resolve through an injected resolver, and name their code."""

from __future__ import annotations

from pathlib import Path

import pytest

from weir.runtime_env import (
    RuntimeEnvError,
    code_digest,
    names_packages,
    package_hash,
    package_uri,
    prepare,
)

W = "a" * 64
M = "b" * 64


def test_package_uris_round_trip() -> None:
    assert package_uri(W) == f"weir://packages/{W}"
    assert package_hash(package_uri(W)) == W
    assert package_hash(package_uri(M, "helpers")) == M
    for other in ("/srv/app", "https://x/y.zip", f"weir://packages/{W[:-1]}",
                  f"weir://packages/{W}/a/b", None, 3):
        assert package_hash(other) is None
    assert names_packages({"py_modules": ["/x", package_uri(M, "m")]})
    assert not names_packages({"working_dir": "/srv"}) and not names_packages(None)


def test_prepare_resolves_packages_through_the_resolver(tmp_path: Path) -> None:
    trees = {W: tmp_path / W, M: tmp_path / M}
    for tree in trees.values():
        tree.mkdir()
    asked: list[str] = []

    def resolve(h: str) -> Path:
        asked.append(h)
        return trees[h]

    env = prepare({"working_dir": package_uri(W), "py_modules": [package_uri(M, "helpers")],
                   "env_vars": {"A": "1"}}, resolve_package=resolve)
    assert env.cwd == str(trees[W])
    # A py_modules package holds its module under its own name: its root goes on sys.path.
    assert env.sys_paths == [str(trees[W]), str(trees[M])]
    assert env.env_vars == {"A": "1"} and asked == [W, M]


def test_prepare_names_the_field_when_a_package_cannot_be_had(tmp_path: Path) -> None:
    with pytest.raises(RuntimeEnvError, match=r"^runtime_env.working_dir: .* is a Weir "
                                              "package, and this process has no package"):
        prepare({"working_dir": package_uri(W)})

    def unreachable(h: str) -> Path:
        raise ConnectionError("no controller answered")

    with pytest.raises(RuntimeEnvError) as failed:
        prepare({"py_modules": [str(tmp_path), package_uri(M, "m")]},
                resolve_package=unreachable)
    assert str(failed.value) == (f"runtime_env.py_modules[1]: cannot get package "
                                 f"'{package_uri(M, 'm')}': no controller answered")


def test_a_package_uri_is_its_own_code_digest(tmp_path: Path) -> None:
    first = code_digest({"working_dir": package_uri(W)})
    assert first == code_digest({"working_dir": package_uri(W)})
    assert first != code_digest({"working_dir": package_uri(M)})
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text("A = 1\n")
    before = code_digest({"working_dir": str(code)})
    (code / "app.py").write_text("A = 2\n")
    assert code_digest({"working_dir": str(code)}) != before


def test_venvs_and_tool_caches_are_not_code(tmp_path: Path) -> None:
    code = tmp_path / "code"
    (code / ".venv" / "lib").mkdir(parents=True)
    (code / "app.py").write_text("A = 1\n")
    before = code_digest({"working_dir": str(code)})
    (code / ".venv" / "lib" / "big.so").write_bytes(b"\0" * 100)
    (code / ".ruff_cache").mkdir()
    (code / ".ruff_cache" / "x").write_text("y")
    assert code_digest({"working_dir": str(code)}) == before
