"""Plan validation: turn a submitted plan (parsed JSON) into a PlanSpec or a coded error.

Pure code: no ORM, no Celery. The error codes are those the REST API answers with (api/errors.py turns
PlanInvalid into its error format).
"""

import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator

from common.errors import DomainError
from plans.batching import CycleError, chunk_levels, topological_levels
from plans.json_values import json_problem, text_problem
from plans.shape import (
    DEFAULT_MAX_PARALLEL,
    DEFAULT_MAX_RETRIES,
    Field,
    Limits,
    plan_fields,
    subtask_fields,
)

__all__ = ["Limits", "PlanInvalid", "PlanSpec", "SubtaskSpec", "validate_plan"]

DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class SubtaskSpec:
    key: str
    description: str
    agent: str
    depends_on: tuple[str, ...] = ()
    input: dict[str, Any] = field(default_factory=dict)
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout_s: int | None = None


@dataclass(frozen=True)
class PlanSpec:
    goal: str
    subtasks: tuple[SubtaskSpec, ...]
    batches: tuple[tuple[str, ...], ...]
    session_id: str = ""
    max_parallel: int = DEFAULT_MAX_PARALLEL
    failure_policy: str = "fail_fast"
    requires_approval: bool = True
    auto_execute: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    callback_url: str = ""


class PlanInvalid(DomainError):
    """A submitted plan breaks a rule; `code` is the API error code."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.code = code


InputCheck = Callable[[str, dict[str, Any]], list[str]]


def validate_plan(
    data: Any,
    *,
    agents: Collection[str],
    limits: Limits = DEFAULT_LIMITS,
    check_input: InputCheck | None = None,
    callbacks_enabled: bool = True,
) -> PlanSpec:
    """Return the plan described by `data`, or raise PlanInvalid with the first failing rule.

    Shapes and types are checked first (all problems at once, as `validation_error`),
    then the size limit, duplicate keys, unknown agents, unknown dependencies and cycles.
    `check_input(agent, input)` lets each agent reject an input it cannot run;
    `callbacks_enabled` false refuses a callback_url (webhooks are not configured).
    """
    if not isinstance(data, Mapping):
        raise PlanInvalid(
            "validation_error", "A plan must be a JSON object.", {"non_field_errors": ["Expected an object."]}
        )
    errors = _Errors()
    fields = plan_fields(limits)
    errors.unknown_fields("", data, fields)
    values = {field.name: errors.read(field.name, field, data) for field in fields if field.kind != "subtasks"}
    if values["callback_url"] and not callbacks_enabled:
        errors.add(
            "callback_url",
            "Webhooks need a secret to sign them: make yours with POST /api/v1/webhook-secret/ first.",
        )

    raw_subtasks = data.get("subtasks")
    if not isinstance(raw_subtasks, list) or not raw_subtasks:
        errors.add("subtasks", "A non-empty list of subtasks is required.")
        errors.raise_if_any()
    assert isinstance(raw_subtasks, list)
    if len(raw_subtasks) > limits.max_subtasks:
        raise PlanInvalid(
            "too_many_subtasks",
            f"A plan may have at most {limits.max_subtasks} subtasks; this one has {len(raw_subtasks)}.",
            {"limit": limits.max_subtasks, "count": len(raw_subtasks)},
        )
    subtasks = [errors.subtask(f"subtasks[{i}]", raw, limits, check_input) for i, raw in enumerate(raw_subtasks)]
    errors.raise_if_any()

    specs = [spec for spec in subtasks if spec is not None]
    keys = [spec.key for spec in specs]
    _check_unique_keys(keys)
    _check_agents(specs, agents)
    _check_dependencies(specs, set(keys))
    try:
        levels = topological_levels(keys, {spec.key: spec.depends_on for spec in specs})
    except CycleError as cycle:
        raise PlanInvalid(
            "cyclic_dependencies",
            f"Subtask dependencies form a cycle: {' -> '.join([*cycle.cycle, cycle.cycle[0]])}.",
            {"cycle": cycle.cycle},
        ) from None
    batches = tuple(tuple(batch) for batch in chunk_levels(levels, values["max_parallel"]))
    return PlanSpec(subtasks=tuple(specs), batches=batches, **values)


def _check_unique_keys(keys: list[str]) -> None:
    duplicates = sorted(key for key, count in Counter(keys).items() if count > 1)
    if duplicates:
        raise PlanInvalid(
            "duplicate_key",
            f"Subtask keys must be unique within a plan: {', '.join(duplicates)}.",
            {"keys": duplicates},
        )


def _check_agents(specs: list[SubtaskSpec], agents: Collection[str]) -> None:
    unknown = {spec.key: spec.agent for spec in specs if spec.agent not in agents}
    if unknown:
        names = sorted(set(unknown.values()))
        raise PlanInvalid(
            "unknown_agent",
            f"Unknown agent(s): {', '.join(names)}. Registered: {', '.join(sorted(agents))}.",
            {"agents": names, "subtasks": unknown},
        )


def _check_dependencies(specs: list[SubtaskSpec], keys: set[str]) -> None:
    unknown = {spec.key: [dep for dep in spec.depends_on if dep not in keys] for spec in specs}
    unknown = {key: deps for key, deps in unknown.items() if deps}
    if unknown:
        first, deps = next(iter(unknown.items()))
        raise PlanInvalid(
            "unknown_dependency",
            f"Subtask {first!r} depends on unknown subtask(s): {', '.join(deps)}.",
            {"subtasks": unknown},
        )


class _Errors:
    """Collects field errors as {path: [messages]} and reads typed values."""

    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}

    def add(self, path: str, message: str) -> None:
        self.fields.setdefault(path, []).append(message)

    def raise_if_any(self) -> None:
        if self.fields:
            first = next(iter(self.fields))
            raise PlanInvalid("validation_error", f"Invalid plan: {first}: {self.fields[first][0]}", dict(self.fields))

    def unknown_fields(self, prefix: str, data: Mapping[str, Any], fields: tuple[Field, ...]) -> None:
        names = {field.name for field in fields}
        for name in data:
            if name not in names:
                self.add(f"{prefix}{name}", "Unknown field.")

    def read(self, path: str, field: Field, data: Mapping[str, Any]) -> Any:
        """Return the field's value in `data` (its default when absent), noting what is wrong with it."""
        if field.name not in data:
            if field.required:
                self.add(path, "This field is required.")
            return field.initial()
        value = data[field.name]
        if value is None and (field.nullable or (field.kind == "text" and not field.required)):
            return field.initial()
        reader = getattr(self, f"_{field.kind}")
        return reader(path, field, value)

    def _text(self, path: str, field: Field, value: Any) -> str:
        if not isinstance(value, str):
            self.add(path, "This field is required." if value is None else "Must be a string.")
            return ""
        if problem := text_problem(value):
            self.add(path, problem)
            return ""
        if not field.blank and not value.strip():
            self.add(path, "May not be blank.")
        if field.max_length is not None and len(value) > field.max_length:
            self.add(path, f"At most {field.max_length} characters (got {len(value)}).")
        if field.pattern and value and not re.fullmatch(field.pattern, value):
            self.add(path, "Use letters, digits and _ . : - only, starting with a letter or digit.")
        return value

    def _integer(self, path: str, field: Field, value: Any) -> int:
        low = field.minimum if field.minimum is not None else 0
        if not isinstance(value, int) or isinstance(value, bool):
            self.add(path, "Must be an integer.")
            return low
        high = field.maximum
        if value < low or (high is not None and value > high):
            self.add(path, f"Must be between {low} and {high}.")
        return value

    def _boolean(self, path: str, field: Field, value: Any) -> bool:
        if not isinstance(value, bool):
            self.add(path, "Must be true or false.")
            return False
        return value

    def _choice(self, path: str, field: Field, value: Any) -> str:
        if value not in field.choices:
            self.add(path, f"Must be one of: {', '.join(field.choices)}.")
            return field.choices[0]
        return str(value)

    def _object(self, path: str, field: Field, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.add(path, "Must be an object.")
            return {}
        if problem := json_problem(value):
            self.add(path, problem)
            return {}
        return value

    def _url(self, path: str, field: Field, value: Any) -> str:
        if value == "":
            return ""
        if not isinstance(value, str):
            self.add(path, "Must be an http(s) URL.")
            return ""
        if field.max_length is not None and len(value) > field.max_length:
            self.add(path, f"At most {field.max_length} characters (got {len(value)}).")
            return ""
        try:
            URLValidator(schemes=["http", "https"])(value)
        except DjangoValidationError:
            self.add(path, "Must be an http(s) URL.")
            return ""
        return value

    def _keys(self, path: str, field: Field, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.add(path, "Must be a list of subtask keys.")
            return ()
        if field.max_items is not None and len(value) > field.max_items:
            self.add(path, f"At most {field.max_items} dependencies (got {len(value)}).")
            return ()
        if problem := next(filter(None, map(text_problem, value)), ""):
            self.add(path, problem)
            return ()
        return tuple(dict.fromkeys(value))

    def subtask(self, path: str, raw: Any, limits: Limits, check_input: InputCheck | None) -> SubtaskSpec | None:
        if not isinstance(raw, Mapping):
            self.add(path, "Must be an object.")
            return None
        before = len(self.fields)
        fields = subtask_fields(limits)
        self.unknown_fields(f"{path}.", raw, fields)
        values = {field.name: self.read(f"{path}.{field.name}", field, raw) for field in fields}
        if isinstance(values["depends_on"], list):
            values["depends_on"] = tuple(values["depends_on"])
        if check_input is not None and values["agent"] and len(self.fields) == before:
            for message in check_input(values["agent"], values["input"]):
                self.add(f"{path}.input", message)
        if len(self.fields) > before:
            return None
        return SubtaskSpec(**values)
