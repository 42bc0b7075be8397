"""Validation errors that name the file, the field path and the rule broken.

Pydantic reports `loc` tuples and generic messages; users of a YAML file need
`spec.manifest[1].sha256sum: must be 64 hex characters`. This module does that translation once.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ._common import DNS_SUBDOMAIN
from ._inference_model import MODEL_NAME_PATTERN, SHA256_PATTERN, URL_PATTERN, VERSION_PATTERN

# What each pattern means, in the words a user needs to fix the value.
_PATTERN_RULES = {
    SHA256_PATTERN: "must be 64 hex characters",
    MODEL_NAME_PATTERN: "must be 1-63 letters, digits, '-', '_' or '.', starting and ending "
    "with a letter or digit",
    VERSION_PATTERN: "must be 1-63 letters, digits, '-', '_' or '.', starting and ending "
    "with a letter or digit",
    URL_PATTERN: "must be an http://, https:// or file:// URL",
    DNS_SUBDOMAIN: "must be a lowercase RFC 1123 name (a-z, 0-9, '-', '.')",
}


class ResourceError(Exception):
    """A resource document that cannot be used; `problems` are `path: rule` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def format_loc(loc: tuple[Any, ...]) -> str:
    """('spec', 'manifest', 1, 'sha256sum') -> 'spec.manifest[1].sha256sum'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _join(path: str, sub: str) -> str:
    return f"{path}.{sub}" if path else sub


def describe_errors(exc: ValidationError) -> list[str]:
    """One `path: rule` line per pydantic error."""
    lines = []
    for err in exc.errors():
        path = format_loc(tuple(p for p in err["loc"] if not _is_union_tag(p)))
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == "value_error":
            # Our validators raise "field: rule" so the field sits under the model's path.
            text = str(ctx.get("error", err["msg"]))
            field, sep, rule = text.partition(": ")
            lines.append(f"{_join(path, field)}: {rule}" if sep else f"{path}: {text}")
        elif kind == "string_pattern_mismatch":
            rule = _PATTERN_RULES.get(ctx.get("pattern", ""), f"must match {ctx.get('pattern')}")
            lines.append(f"{path}: {rule} (got {err['input']!r})")
        elif kind == "extra_forbidden":
            lines.append(f"{path}: unknown field")
        elif kind == "missing":
            lines.append(f"{path}: required field is missing")
        elif kind == "string_type" and isinstance(err["input"], (bool, int, float)):
            lines.append(_unquoted(path, err["input"]))
        elif kind == "literal_error":
            lines.append(f"{path}: must be one of {ctx.get('expected')} (got {err['input']!r})")
        else:
            lines.append(f"{path}: {err['msg'][0].lower()}{err['msg'][1:]}")
    return lines


def _unquoted(path: str, value: bool | int | float) -> str:
    """A string field that YAML read as a number or boolean: a sha256 of digits only, a version
    like 1.0, `on`. The value may already be changed (leading zeros gone), so say to quote it."""
    field = path.rsplit(".", 1)[-1].split("[", 1)[0]
    kind = {bool: "a boolean", int: "an integer", float: "a number"}[type(value)]
    return (f"{path}: must be a string, but YAML read the value as {kind} ({value!r}); "
            f"quote it, e.g. {field}: \"...\"")


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts the member type name ('str', 'constrained-str') into locs of
    # optional fields; it is noise for a YAML author.
    return isinstance(part, str) and (part in {"str", "int"} or part.startswith("constrained-"))
