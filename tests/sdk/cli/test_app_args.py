"""`serve run/deploy module:app k=v` and the runtime env flags (weir.cli.app_args), and
the one-line error for an HTTP server that is not installed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from weir.cli import app_args
from weir.cli.commands import main


def test_builder_args_are_key_value_strings() -> None:
    assert app_args.builder_args(("model=gpt2", "n=3", "url=a=b")) == {
        "model": "gpt2", "n": "3", "url": "a=b"}


@pytest.mark.parametrize("bad", ["model", "=3"])
def test_an_argument_without_key_value_is_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="not key=value"):
        app_args.builder_args((bad,))


def test_an_argument_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'n' is given twice"):
        app_args.builder_args(("n=1", "n=2"))


def test_runtime_env_from_yaml_json_and_working_dir(tmp_path: Path) -> None:
    env_file = tmp_path / "env.yaml"
    env_file.write_text("env_vars:\n  A: '1'\n")
    assert app_args.runtime_env(str(env_file), None, None) == {"env_vars": {"A": "1"}}
    assert app_args.runtime_env(None, json.dumps({"pip": ["x"]}), None) == {"pip": ["x"]}
    merged = app_args.runtime_env(None, '{"working_dir": "s3://b/c.zip"}', str(tmp_path))
    assert merged == {"working_dir": str(tmp_path)}
    assert app_args.runtime_env(None, None, "s3://b/c.zip") == {"working_dir": "s3://b/c.zip"}


def test_runtime_env_flags_that_conflict_or_do_not_parse(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give one"):
        app_args.runtime_env("a.yaml", "{}", None)
    with pytest.raises(ValueError, match="--runtime-env-json is not JSON"):
        app_args.runtime_env(None, "{", None)
    with pytest.raises(ValueError, match="must be a mapping"):
        app_args.runtime_env(None, "[1]", None)
    with pytest.raises(ValueError, match="--runtime-env: cannot read"):
        app_args.runtime_env(str(tmp_path / "missing.yaml"), None, None)


def test_import_path_config_carries_args_and_runtime_env(tmp_path: Path) -> None:
    config = app_args.import_path_config(
        "app:builder", ("size=2",), name="a", route_prefix="/a", app_dir=str(tmp_path),
        env={"env_vars": {"X": "1"}})
    assert config == {"applications": [{
        "name": "a", "route_prefix": "/a", "import_path": "app:builder",
        "runtime_env": {"working_dir": str(tmp_path), "env_vars": {"X": "1"}},
        "args": {"size": "2"}}]}


def test_deploy_refuses_builder_arguments_with_a_config_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["deploy", str(tmp_path / "c.yaml"), "k=v"])
    assert result.exit_code == 1
    assert "go with an import path" in result.output


def test_deploy_names_a_bad_builder_argument() -> None:
    result = CliRunner().invoke(main, ["deploy", "app:builder", "oops", "-a", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "'oops' is not key=value" in result.output


def test_start_with_uvicorn_missing_fails_in_one_line_naming_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else find_spec(name, *a))
    result = CliRunner().invoke(main, ["start", "--http-server", "uvicorn"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --http-server uvicorn needs uvicorn, which is not installed: "
        "pip install 'weir[fast]'"]
