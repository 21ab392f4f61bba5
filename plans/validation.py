"""Plan validation: turn a submitted plan (parsed JSON) into a PlanSpec or a coded error.

Pure code: no ORM, no Celery. The error codes are the API's (SPEC.md section 5).
"""

import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator

from plans.batching import CycleError, chunk_levels, topological_levels

MAX_PARALLEL_LIMIT = 64
DEFAULT_MAX_PARALLEL = 3
DEFAULT_MAX_RETRIES = 3
MAX_RETRIES_LIMIT = 100
KEY_MAX_LENGTH = 100
AGENT_MAX_LENGTH = 64
SESSION_ID_MAX_LENGTH = 255
FAILURE_POLICIES = ("fail_fast", "continue")
# Keys appear in URLs (/plans/{id}/subtasks/{key}/retry/), so keep them path-safe.
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")

PLAN_FIELDS = {
    "goal",
    "session_id",
    "max_parallel",
    "failure_policy",
    "requires_approval",
    "auto_execute",
    "metadata",
    "callback_url",
    "subtasks",
}
SUBTASK_FIELDS = {"key", "description", "agent", "depends_on", "input", "max_retries", "timeout_s"}


@dataclass(frozen=True)
class Limits:
    """Sizes a plan may not exceed (from settings)."""

    max_subtasks: int = 10_000
    max_goal_length: int = 10_000
    max_description_length: int = 10_000
    max_timeout_s: int = 1800


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


class PlanInvalid(Exception):
    """A submitted plan breaks a rule; `code` is the API error code."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


InputCheck = Callable[[str, dict[str, Any]], list[str]]


def validate_plan(
    data: Any,
    *,
    agents: Collection[str],
    limits: Limits = Limits(),
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
    errors.unknown_fields("", data, PLAN_FIELDS)
    goal = errors.text("goal", data.get("goal"), max_length=limits.max_goal_length, required=True)
    session_id = errors.text("session_id", data.get("session_id", ""), max_length=SESSION_ID_MAX_LENGTH, blank=True)
    max_parallel = errors.integer("max_parallel", data.get("max_parallel", DEFAULT_MAX_PARALLEL), 1, MAX_PARALLEL_LIMIT)
    failure_policy = errors.choice("failure_policy", data.get("failure_policy", "fail_fast"), FAILURE_POLICIES)
    requires_approval = errors.boolean("requires_approval", data.get("requires_approval", True))
    auto_execute = errors.boolean("auto_execute", data.get("auto_execute", True))
    metadata = errors.mapping("metadata", data.get("metadata", {}))
    callback_url = errors.url("callback_url", data.get("callback_url", ""))
    if callback_url and not callbacks_enabled:
        errors.add("callback_url", "Webhooks are disabled on this service (WEBHOOK_SECRET is not set).")

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
    batches = tuple(tuple(batch) for batch in chunk_levels(levels, max_parallel))
    return PlanSpec(
        goal=goal,
        subtasks=tuple(specs),
        batches=batches,
        session_id=session_id,
        max_parallel=max_parallel,
        failure_policy=failure_policy,
        requires_approval=requires_approval,
        auto_execute=auto_execute,
        metadata=metadata,
        callback_url=callback_url,
    )


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

    def unknown_fields(self, prefix: str, data: Mapping[str, Any], allowed: set[str]) -> None:
        for name in data:
            if name not in allowed:
                self.add(f"{prefix}{name}", "Unknown field.")

    def text(self, path: str, value: Any, *, max_length: int, required: bool = False, blank: bool = False) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str):
            self.add(path, "This field is required." if value is None else "Must be a string.")
            return ""
        if not blank and not value.strip():
            self.add(path, "May not be blank.")
        if len(value) > max_length:
            self.add(path, f"At most {max_length} characters (got {len(value)}).")
        return value

    def integer(self, path: str, value: Any, low: int, high: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            self.add(path, "Must be an integer.")
            return low
        if not low <= value <= high:
            self.add(path, f"Must be between {low} and {high}.")
        return value

    def boolean(self, path: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.add(path, "Must be true or false.")
            return False
        return value

    def choice(self, path: str, value: Any, choices: tuple[str, ...]) -> str:
        if value not in choices:
            self.add(path, f"Must be one of: {', '.join(choices)}.")
            return choices[0]
        return str(value)

    def mapping(self, path: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.add(path, "Must be an object.")
            return {}
        return value

    def url(self, path: str, value: Any) -> str:
        if value in ("", None):
            return ""
        try:
            URLValidator(schemes=["http", "https"])(value)
        except DjangoValidationError:
            self.add(path, "Must be an http(s) URL.")
            return ""
        return str(value)

    def subtask(self, path: str, raw: Any, limits: Limits, check_input: InputCheck | None) -> SubtaskSpec | None:
        if not isinstance(raw, Mapping):
            self.add(path, "Must be an object.")
            return None
        before = len(self.fields)
        self.unknown_fields(f"{path}.", raw, SUBTASK_FIELDS)
        key = self.text(f"{path}.key", raw.get("key"), max_length=KEY_MAX_LENGTH, required=True)
        if key and not KEY_PATTERN.fullmatch(key):
            self.add(f"{path}.key", "Use letters, digits and _ . : - only, starting with a letter or digit.")
        description = self.text(
            f"{path}.description", raw.get("description"), max_length=limits.max_description_length, required=True
        )
        agent = self.text(f"{path}.agent", raw.get("agent"), max_length=AGENT_MAX_LENGTH, required=True)
        depends_on = self._keys(f"{path}.depends_on", raw.get("depends_on", []))
        task_input = self.mapping(f"{path}.input", raw.get("input", {}))
        max_retries = self.integer(
            f"{path}.max_retries", raw.get("max_retries", DEFAULT_MAX_RETRIES), 0, MAX_RETRIES_LIMIT
        )
        timeout_s = raw.get("timeout_s")
        if timeout_s is not None:
            timeout_s = self.integer(f"{path}.timeout_s", timeout_s, 1, limits.max_timeout_s)
        if check_input is not None and agent and len(self.fields) == before:
            for message in check_input(agent, task_input):
                self.add(f"{path}.input", message)
        if len(self.fields) > before:
            return None
        return SubtaskSpec(
            key=key,
            description=description,
            agent=agent,
            depends_on=depends_on,
            input=task_input,
            max_retries=max_retries,
            timeout_s=timeout_s,
        )

    def _keys(self, path: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.add(path, "Must be a list of subtask keys.")
            return ()
        return tuple(dict.fromkeys(value))
