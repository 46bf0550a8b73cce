"""What is wrong with a config, said so a user can fix it.

Every error names its field path (`applications[0].deployments[1].num_replicas`) and every
problem is reported at once, in one `ConfigError`. Pydantic's errors are rewritten here:
its locations become field paths, an unknown field gets the closest known name (or Ray
Serve's new name for an old one), and the value is quoted after "got" when it is short
enough to help.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from weir.config.schema import ServeApplicationSchema, ServeDeploySchema

__all__ = ["ConfigError", "unknown_name", "validation_errors"]

#: Ray Serve's old names, so that an old config gets told the new one.
_RENAMED = {"max_concurrent_queries": "max_ongoing_requests"}


class ConfigError(ValueError):
    """A config (file, JSON or decorator options) is invalid.

    `errors` lists every problem as (field path, what is wrong); the message has one line per
    problem, "<field path>: <what is wrong> (got <value>)".
    """

    def __init__(self, errors: Sequence[tuple[str, str]] | str) -> None:
        if isinstance(errors, str):
            errors = [("", errors)]
        self.errors: list[tuple[str, str]] = list(errors)
        super().__init__("\n".join(f"{p}: {m}" if p else m for p, m in self.errors))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors,))


def validation_errors(exc: ValidationError, root: type[BaseModel]) -> list[tuple[str, str]]:
    """Every problem pydantic found validating `root`, as (field path, what is wrong)."""
    return [(_path(e["loc"]), _describe(e, root)) for e in exc.errors(include_url=False)]


def unknown_name(name: str, known: Sequence[str], what: str = "field") -> str:
    """What to say of an unknown field (or option) `name`: Ray Serve's new name for it, or
    the closest of `known`."""
    if name in _RENAMED:
        return f"unknown {what} (Ray Serve renamed it {_RENAMED[name]})"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"unknown {what}" + (f" (did you mean {close[0]}?)" if close else "")


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        elif part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    model = root
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        nested = _nested_model(info.annotation) if info else None
        if nested is None:
            return None
        model = nested
    return model


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _show(value: Any) -> str | None:
    """How an input is quoted after "got", or None when it is too big to help."""
    text = repr(value)
    if isinstance(value, (dict, list, tuple)) and len(text) > 60:
        return None
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(error: Mapping[str, Any], root: type[BaseModel]) -> str:
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        message = unknown_name(str(loc[-1]), list(parent.model_fields) if parent else [])
        if parent is ServeDeploySchema and loc[-1] in ServeApplicationSchema.model_fields:
            message += "; it belongs to one application, under `applications`"
        return message
    if error["type"] == "missing":
        return "required field is missing"
    message = re.sub(r"^(Value error|Assertion failed), ", "", str(error["msg"]))
    message = re.sub(r"^\w+ should ", "must ", message)
    message = re.sub(r" or instance of \w+", "", message)
    shown = _show(error.get("input"))
    return message if shown is None else f"{message} (got {shown})"
