"""Approval policies as data: the rules of APPROVALS_POLICY_FILE, checked field by field, and the matcher.

Pure: no ORM, no settings. `rules_parse` turns `{"rules": [...]}` into Rules or raises
PolicyFileError naming the rule and the field; `rule_match` returns the first rule whose
`match` fits an approval about to be requested (a Subject), or None.
"""

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

DECISIONS = ("allow", "deny", "ask")
KINDS = ("plan", "tool_call")
ON_EXPIRY = ("reject", "approve")
MATCH_FIELDS = ("kind", "agent", "tool", "arguments", "requester_group")
RULE_FIELDS = {"name", "match", "decision", "reason", "approvers", "quorum", "separate_requester"} | {
    "expires_after_s",
    "on_expiry",
}
ASK_FIELDS = ("approvers", "quorum", "separate_requester", "expires_after_s", "on_expiry")
APPROVER = re.compile(r"^(user|group):\S.*$")
MAX_NAME_LENGTH = 100
MAX_QUORUM = 100


class PolicyFileError(ImproperlyConfigured):
    """The policy file cannot be used; the one-line message names the file, the rule and the field."""


class _FieldError(ValueError):
    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")


@dataclass(frozen=True)
class Subject:
    """An approval about to be requested, as the rules see it."""

    kind: str
    # The subtask's agent for a tool call; every subtask's agent for a plan.
    agents: tuple[str, ...]
    tool: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    # The Django groups the plan's owner belongs to.
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Rule:
    """One rule of the file, with the defaults of its decision filled in (None: the setting's default)."""

    name: str
    decision: str
    match: Mapping[str, Any]
    reason: str = ""
    approvers: tuple[str, ...] | None = None
    quorum: int = 1
    separate_requester: bool | None = None
    expires_after_s: int | None = None
    on_expiry: str = "reject"
    # One check per key of `match`, the cheap ones first (the order does not change what fits).
    _checks: tuple[Callable[[Subject], bool], ...] = field(default=(), compare=False, repr=False)

    def fits(self, subject: Subject) -> bool:
        """Return whether every key of `match` fits the subject."""
        # A plain loop: a generator under all() costs as much as the checks themselves.
        for check in self._checks:  # noqa: SIM110
            if not check(subject):
                return False
        return True

    def describe(self) -> dict[str, Any]:
        """Return the rule as the file would spell it, with its decision's defaults."""
        described: dict[str, Any] = {"name": self.name, "match": dict(self.match), "decision": self.decision}
        if self.decision == "deny":
            described["reason"] = self.reason
        if self.decision == "ask":
            described.update(
                approvers=list(self.approvers) if self.approvers is not None else None,
                quorum=self.quorum,
                separate_requester=self.separate_requester,
                expires_after_s=self.expires_after_s,
                on_expiry=self.on_expiry,
            )
        return described


def argument_text(value: Any) -> str:
    """Return what an argument's glob is matched against: a string as it is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def glob(pattern: str) -> Any:
    """Return a case-sensitive matcher of a glob (`*`, `?`, `[...]`) against a whole text."""
    return re.compile(translate(pattern), re.DOTALL).match


def rule_match(rules: Iterable[Rule], subject: Subject) -> Rule | None:
    """Return the first rule whose `match` fits the subject, or None."""
    for rule in rules:
        if rule.fits(subject):
            return rule
    return None


# --- Reading and checking the file -----------------------------------------------------------


def policy_file_read(path: str) -> list[Rule]:
    """Return the rules of the policy file at `path`; raise PolicyFileError naming what is wrong."""
    where = f"APPROVALS_POLICY_FILE {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        raise PolicyFileError(f"{where}: cannot be read ({reason}).") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise PolicyFileError(f"{where}: is not valid JSON ({error}).") from None
    return rules_parse(data, where=where)


def rules_parse(data: Any, *, where: str = "APPROVALS_POLICY_FILE") -> list[Rule]:
    """Return the rules of a policy document `{"rules": [...]}`; raise PolicyFileError at the first mistake."""
    if not isinstance(data, dict) or set(data) != {"rules"} or not isinstance(data["rules"], list):
        raise PolicyFileError(f'{where}: must be a JSON object {{"rules": [...]}} and nothing else.')
    rules: list[Rule] = []
    names: set[str] = set()
    for index, definition in enumerate(data["rules"]):
        label = f"rule {index + 1}"
        if isinstance(definition, dict) and isinstance(definition.get("name"), str) and definition["name"]:
            label = f'rule "{definition["name"]}"'
        try:
            rule = rule_parse(definition)
        except _FieldError as error:
            raise PolicyFileError(f"{where}: {label}: {error}") from None
        if rule.name in names:
            raise PolicyFileError(f"{where}: {label}: name: another rule has this name")
        names.add(rule.name)
        rules.append(rule)
    return rules


def rule_parse(definition: Any) -> Rule:
    """Return one rule; raise _FieldError naming its first wrong field."""
    if not isinstance(definition, dict):
        raise _FieldError("rule", 'must be an object like {"name": ..., "match": {...}, "decision": ...}')
    unknown = sorted(set(definition) - RULE_FIELDS)
    if unknown:
        raise _FieldError(unknown[0], f"is not a field of a rule (fields: {', '.join(sorted(RULE_FIELDS))})")
    name = definition.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise _FieldError("name", f"is required: a text of 1 to {MAX_NAME_LENGTH} characters")
    decision = definition.get("decision")
    if decision not in DECISIONS:
        raise _FieldError("decision", f"must be one of {', '.join(DECISIONS)}, not {json.dumps(decision)}")
    if "match" not in definition:
        raise _FieldError("match", "is required ({} fits every approval)")
    match, checks = _match_parse(definition["match"])
    if "reason" in definition and decision != "deny":
        raise _FieldError("reason", 'is for "deny" rules only')
    reason = definition.get("reason", f"denied by policy {name}")
    if not isinstance(reason, str) or not reason.strip():
        raise _FieldError("reason", "must be a non-empty text")
    if decision != "ask":
        for key in ASK_FIELDS:
            if key in definition:
                raise _FieldError(key, 'is for "ask" rules only')
        return Rule(name=name, decision=decision, match=match, reason=reason, _checks=checks)
    return Rule(name=name, decision=decision, match=match, _checks=checks, **_ask_parse(definition))


def _match_parse(match: Any) -> tuple[dict[str, Any], tuple[Callable[[Subject], bool], ...]]:
    if not isinstance(match, dict):
        raise _FieldError("match", "must be an object ({} fits every approval)")
    unknown = sorted(set(match) - set(MATCH_FIELDS))
    if unknown:
        raise _FieldError(f"match.{unknown[0]}", f"is not a key of match (keys: {', '.join(MATCH_FIELDS)})")
    checks: list[Callable[[Subject], bool]] = []
    if "kind" in match:
        kind = match["kind"]
        if kind not in KINDS:
            raise _FieldError("match.kind", f"must be one of {', '.join(KINDS)}, not {json.dumps(kind)}")
        checks.append(lambda subject: subject.kind == kind)
    if "requester_group" in match:
        group = _text(match["requester_group"], "match.requester_group", "a group name")
        checks.append(lambda subject: group in subject.groups)
    if "tool" in match:
        tool = glob(_text(match["tool"], "match.tool", "a glob pattern"))
        checks.append(lambda subject: tool(subject.tool) is not None)
    if "agent" in match:
        agent = glob(_text(match["agent"], "match.agent", "a glob pattern"))
        checks.append(lambda subject: all(agent(name) is not None for name in subject.agents))
    if "arguments" in match:
        arguments = match["arguments"]
        if not isinstance(arguments, dict) or not arguments:
            raise _FieldError("match.arguments", 'must be an object of argument names and globs, like {"cmd": "rm *"}')
        globs = tuple(
            (name, glob(_text(value, f"match.arguments.{name}", "a glob pattern"))) for name, value in arguments.items()
        )
        checks.append(lambda subject: _arguments_fit(globs, subject.arguments))
    return dict(match), tuple(checks)


def _arguments_fit(globs: tuple[tuple[str, Any], ...], arguments: Mapping[str, Any]) -> bool:
    return all(name in arguments and fits(argument_text(arguments[name])) is not None for name, fits in globs)


def _ask_parse(definition: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    if "approvers" in definition:
        approvers = definition["approvers"]
        if not isinstance(approvers, list) or not approvers:
            raise _FieldError("approvers", 'must be a non-empty list like ["user:alice", "group:leads"]')
        for index, approver in enumerate(approvers):
            if not isinstance(approver, str) or not APPROVER.match(approver):
                raise _FieldError(f"approvers[{index}]", 'must be "user:<username>" or "group:<name>"')
        checked["approvers"] = tuple(approvers)
    quorum = definition.get("quorum", 1)
    if not _integer(quorum) or not 1 <= quorum <= MAX_QUORUM:
        raise _FieldError("quorum", f"must be a whole number from 1 to {MAX_QUORUM}")
    approvers = checked.get("approvers")
    if approvers is not None and all(a.startswith("user:") for a in approvers) and quorum > len(set(approvers)):
        raise _FieldError("quorum", f"can never be reached: only {len(set(approvers))} users may vote")
    checked["quorum"] = quorum
    if "separate_requester" in definition:
        if not isinstance(definition["separate_requester"], bool):
            raise _FieldError("separate_requester", "must be true or false")
        checked["separate_requester"] = definition["separate_requester"]
    if "expires_after_s" in definition:
        expires = definition["expires_after_s"]
        if not _integer(expires) or expires < 1:
            raise _FieldError("expires_after_s", "must be a whole number of seconds, at least 1")
        checked["expires_after_s"] = expires
    on_expiry = definition.get("on_expiry", "reject")
    if on_expiry not in ON_EXPIRY:
        raise _FieldError("on_expiry", f"must be one of {', '.join(ON_EXPIRY)}, not {json.dumps(on_expiry)}")
    checked["on_expiry"] = on_expiry
    return checked


def _text(value: Any, field_name: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise _FieldError(field_name, f"must be {what} (a non-empty text)")
    return value


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def rules_describe(rules: Sequence[Rule]) -> list[dict[str, Any]]:
    """Return the rules as the file would spell them, in the order they are matched."""
    return [rule.describe() for rule in rules]
