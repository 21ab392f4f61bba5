"""Checking one field of an agent definition: the checks every kind shares, and the error naming the field."""

import json
import re
from typing import Any
from urllib.parse import urlsplit

# What the Chat Completions API accepts as a function name.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DefinitionError(ValueError):
    """One field of an agent definition is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f'"{field}" {problem}')


def check_only(options: dict[str, Any], allowed: set[str]) -> None:
    for key in options:
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise DefinitionError(key, f"is not an option of this kind (options: {known})")


def check_string(options: dict[str, Any], key: str, *, required: bool = False, empty: bool = False) -> str | None:
    value = options.get(key)
    if value is None:
        if required:
            raise DefinitionError(key, "is required")
        return None
    if not isinstance(value, str) or (not value and not empty):
        raise DefinitionError(key, "must be a non-empty string" if not empty else "must be a string")
    return value


def check_bool(options: dict[str, Any], key: str) -> bool | None:
    value = options.get(key)
    if value is not None and not isinstance(value, bool):
        raise DefinitionError(key, "must be true or false")
    return value


def check_url(options: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = check_string(options, key, required=required)
    if value is not None:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DefinitionError(key, f"must be an http:// or https:// URL, not {json.dumps(value)}")
    return value


def check_number(
    options: dict[str, Any],
    key: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    integer: bool = False,
) -> Any:
    value = options.get(key)
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise DefinitionError(key, "must be an integer" if integer else "must be a number")
    if minimum is not None and value < minimum:
        raise DefinitionError(key, f"must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise DefinitionError(key, f"must be at most {maximum}")
    return value


def check_positive(options: dict[str, Any], key: str) -> float | None:
    value = check_number(options, key)
    if value is not None and value <= 0:
        raise DefinitionError(key, "must be more than 0")
    return value


def check_mapping(field: str, value: Any, kind: type, what: str) -> dict[str, Any]:
    """Check an object whose values are all of one kind (`what` says which, in the error)."""
    if not isinstance(value, dict):
        raise DefinitionError(field, "must be an object")
    for key, item in value.items():
        if not isinstance(item, kind):
            raise DefinitionError(f"{field}.{key}", f"must be {what}")
    return value
