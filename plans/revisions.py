"""A plan's revisions as data: a submission as accepted, what may change in a draft, and the diff between two.

Pure code: no ORM, no Celery. A revision's content is the whole submission with every default
filled in, so two revisions compare field by field whatever the client left out.
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any

from common.errors import DomainError
from plans.validation import PlanSpec

# What a PATCH of a draft may change; the other fields of a submission stay as submitted.
REVISABLE = ("goal", "max_parallel", "failure_policy", "metadata", "subtasks")
# The plan's own fields a diff compares (the subtasks are compared one by one).
PLAN_COMPARED = ("goal", "max_parallel", "failure_policy", "metadata")
# A subtask is changed when one of these differs (SPEC 3.10); its position in the list is not one.
SUBTASK_COMPARED = ("description", "agent", "depends_on", "input", "max_retries", "timeout_s")


class StaleRevision(DomainError):
    """If-Match named a revision the plan is no longer at: someone else revised it first."""

    code = "stale_revision"
    http_status = 412

    def __init__(self, *, current: int) -> None:
        super().__init__(
            f"The plan is at revision {current} now; read it again and revise that one.",
            details={"revision": current},
        )


def spec_content(spec: PlanSpec) -> dict[str, Any]:
    """Return a validated submission as its revision keeps it: every field, defaults filled in."""
    return {
        "goal": spec.goal,
        "session_id": spec.session_id,
        "max_parallel": spec.max_parallel,
        "failure_policy": spec.failure_policy,
        "requires_approval": spec.requires_approval,
        "auto_execute": spec.auto_execute,
        "metadata": spec.metadata,
        "callback_url": spec.callback_url,
        "subtasks": [
            {
                "key": item.key,
                "description": item.description,
                "agent": item.agent,
                "depends_on": list(item.depends_on),
                "input": item.input,
                "max_retries": item.max_retries,
                "timeout_s": item.timeout_s,
            }
            for item in spec.subtasks
        ],
    }


def fixed_fields_changed(current: Mapping[str, Any], revised: Mapping[str, Any]) -> dict[str, list[str]]:
    """Return, as field errors, the fields a revision may not change that `revised` changes."""
    return {
        name: [f"Cannot be revised (only {', '.join(REVISABLE)} can); this plan's is {current[name]!r}."]
        for name in current
        if name not in REVISABLE and not same_json(revised.get(name), current[name])
    }


def content_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Return what changed from one revision's content to another's.

    `added`, `removed`, `changed`: subtask keys (added and changed in the new order, removed
    in the old); `subtask_fields`: for each changed subtask, the names of the fields that
    differ; `plan_fields`: the plan's own fields that differ. Dependencies are compared as sets.
    """
    before = {item["key"]: item for item in old["subtasks"]}
    after = {item["key"]: item for item in new["subtasks"]}
    fields: dict[str, list[str]] = {}
    for key, item in after.items():
        if key in before:
            differing = [name for name in SUBTASK_COMPARED if not _same(name, before[key].get(name), item.get(name))]
            if differing:
                fields[key] = differing
    return {
        "added": [key for key in after if key not in before],
        "removed": [key for key in before if key not in after],
        "changed": list(fields),
        "subtask_fields": fields,
        "plan_fields": [name for name in PLAN_COMPARED if not same_json(old.get(name), new.get(name))],
    }


def event_diff(diff: Mapping[str, Any]) -> dict[str, Any]:
    """Return the part of a revision's diff that the plan.revised event carries (SPEC 3.10)."""
    return {name: diff[name] for name in ("revision", "added", "removed", "changed")}


def same_json(before: Any, after: Any) -> bool:
    """Return whether two JSON values are the same as JSON (where Python's == holds 1, 1.0 and true equal)."""
    return _canonical(before) == _canonical(after)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _same(name: str, before: Any, after: Any) -> bool:
    if name == "depends_on":
        return set(_keys(before)) == set(_keys(after))
    return same_json(before, after)


def _keys(value: Any) -> Sequence[str]:
    return value if isinstance(value, list | tuple) else ()
