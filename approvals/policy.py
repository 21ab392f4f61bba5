"""The rules in force (APPROVALS_POLICY_FILE, read once per process) and the rule that fits a plan or a tool call."""

from functools import cache
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.signals import setting_changed
from django.dispatch import receiver

from approvals.rules import Rule, Subject, policy_file_read, rule_match
from execution.agents.registry import UnknownAgent, agent_get
from plans.models import Plan, Subtask


@cache
def policy_rules() -> tuple[Rule, ...]:
    """Return the rules in force, in the order they are matched (none without a file)."""
    if not settings.APPROVALS_POLICY_FILE:
        return ()
    return tuple(policy_file_read(settings.APPROVALS_POLICY_FILE))


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "APPROVALS_POLICY_FILE":
        policy_rules.cache_clear()


def policy_load() -> None:
    """Read and check APPROVALS_POLICY_FILE now; raise PolicyFileError when it is wrong."""
    policy_rules()


def _groups(plan_id: UUID | str) -> frozenset[str]:
    """Return the groups of the plan's owner, when a rule asks about them (one query)."""
    if not any("requester_group" in rule.match for rule in policy_rules()):
        return frozenset()
    owners = Plan.objects.filter(pk=plan_id).values("owner_id")
    return frozenset(Group.objects.filter(user__in=owners).values_list("name", flat=True))


def plan_rule(plan: Plan) -> Rule | None:
    """Return the rule that decides a plan's approval, or None."""
    rules = policy_rules()
    if not rules:
        return None
    agents = tuple(plan.subtasks.values_list("agent", flat=True).distinct())
    return rule_match(rules, Subject(kind="plan", agents=agents, groups=_groups(plan.pk)))


def tool_call_rule(*, plan_id: UUID | str, agent: str, tool: str, arguments: dict[str, Any]) -> Rule | None:
    """Return the rule that decides a tool call of a subtask run by `agent`, or None."""
    rules = policy_rules()
    if not rules:
        return None
    subject = Subject(kind="tool_call", agents=(agent,), tool=tool, arguments=arguments, groups=_groups(plan_id))
    return rule_match(rules, subject)


def result_from_client(subtask: Subtask, tool: str) -> bool:
    """Return whether only the client can send this call's result (an `openai` agent's tool that runs on the client)."""
    try:
        agent = agent_get(subtask.agent)
    except UnknownAgent:
        return False
    tools = getattr(agent, "tools", None)
    definition = tools.get(tool) if isinstance(tools, dict) else None
    return getattr(definition, "runs", None) == "client"
