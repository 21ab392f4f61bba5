"""Grants: an approving vote that remembers its tool call, so that later calls of the tool are approved at once.

`"remember": "plan"` on an approve vote covers later calls of the same tool by the same agent in
that plan; `"session"` covers them in every plan of the plan's owner with the same session_id.
A grant never outranks a rule: a call that a rule denies is denied, and one that a rule asks a
quorum above 1 or a separate requester for is asked for as usual (approvals/services.py decides
when a grant applies). Grants are made and revoked under the plan's lock and recorded in its
events (`grant.created`, `grant.revoked`).
"""

import logging
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.db.models import Q, QuerySet

from approvals.models import Approval, ApprovalKind, Grant, GrantScope
from approvals.policy import result_from_client
from approvals.selectors import plans_visible_to_voters
from common.errors import DomainError
from execution.engine.plan_flow import plan_lock
from execution.events import event_append
from plans.models import Plan
from plans.selectors import is_approver

logger = logging.getLogger(__name__)


class GrantNotFound(DomainError):
    code = "not_found"
    http_status = 404

    def __init__(self) -> None:
        super().__init__("No such grant.")


class GrantRevokeRefused(DomainError):
    """The user sees the grant's plan (a designated approver) but is neither its owner nor a decider."""

    code = "permission_denied"
    http_status = 403

    def __init__(self) -> None:
        super().__init__("Only the plan's owner or a decider may revoke its grants.", details={"reason": "not_owner"})


def remember_problem(plan: Plan, approval: Approval, scope: str) -> str:
    """Return why a vote on this approval cannot remember its call (a message for `remember`), or ""."""
    if approval.kind != ApprovalKind.TOOL_CALL or approval.subtask is None:
        return "Only a tool call can be remembered, not a plan approval."
    if approval.quorum > 1:
        return f"A call that {approval.quorum} approvers must agree on is asked for each time; it cannot be remembered."
    if approval.separate_requester:
        return "A call whose plan's owner may not vote on it is asked for each time; it cannot be remembered."
    if result_from_client(approval.subtask, approval.tool):
        return "A tool that runs on the client sends its result with each call; it cannot be remembered."
    if scope == GrantScope.SESSION and not plan.session_id:
        return 'The plan has no session_id: remember the call for the "plan" instead.'
    return ""


def grant_make(plan: Plan, approval: Approval, *, scope: str, user: User) -> Grant:
    """Remember an approved call (the caller holds the plan's lock and checked remember_problem); return the grant.

    The same grant made twice (another call approved with `remember` meanwhile) is kept once.
    """
    assert approval.subtask is not None
    fields: dict[str, Any] = {"scope": scope, "owner_id": plan.owner_id, "agent": approval.subtask.agent}
    fields.update(tool=approval.tool, session_id=plan.session_id if scope == GrantScope.SESSION else "")
    existing = Grant.objects.filter(**fields, **({"plan": plan} if scope == GrantScope.PLAN else {})).first()
    if existing is not None:
        return existing
    grant = Grant.objects.create(plan=plan, approval=approval, created_by=user, **fields)
    event_append(plan_id=plan.pk, type="grant.created", payload=grant_payload(grant))
    logger.info("Plan %s: %s remembered %r of agent %r for the %s", plan.pk, user, grant.tool, grant.agent, scope)
    return grant


def grant_applying(plan: Plan, *, agent: str, tool: str) -> Grant | None:
    """Return a grant that covers a call of `tool` by `agent` in the plan, or None."""
    covering = Q(scope=GrantScope.PLAN, plan=plan)
    if plan.session_id:
        covering |= Q(scope=GrantScope.SESSION, owner_id=plan.owner_id, session_id=plan.session_id)
    return Grant.objects.filter(covering, agent=agent, tool=tool).select_related("created_by").first()


def grants_of_plan(plan: Plan) -> QuerySet[Grant]:
    """Return the grants in force in a plan: its own, and its owner's for the plan's session."""
    covering = Q(scope=GrantScope.PLAN, plan=plan)
    if plan.session_id:
        covering |= Q(scope=GrantScope.SESSION, owner_id=plan.owner_id, session_id=plan.session_id)
    return Grant.objects.filter(covering).select_related("created_by")


def grant_revoke(*, grant_id: UUID | str, user: User | AnonymousUser) -> None:
    """Revoke a grant: its plan's owner or a decider (GrantRevokeRefused); GrantNotFound for anyone else.

    Calls already approved by it stay approved; later ones are asked for again.
    """
    plan_id = Grant.objects.filter(pk=grant_id).values_list("plan_id", flat=True).first()
    if plan_id is None or not plans_visible_to_voters(user).filter(pk=plan_id).exists():
        raise GrantNotFound()
    with transaction.atomic():
        plan = plan_lock(plan_id)
        grant = Grant.objects.select_for_update().filter(pk=grant_id).first()
        if grant is None:  # revoked meanwhile
            raise GrantNotFound()
        if not (plan.owner_id == user.pk or is_approver(user)):
            raise GrantRevokeRefused()
        payload = grant_payload(grant)
        grant.delete()
        event_append(plan_id=plan.pk, type="grant.revoked", payload={**payload, "revoked_by": user.get_username()})
    logger.info("Plan %s: %s revoked the grant %s", plan_id, user.get_username(), grant_id)


def grant_payload(grant: Grant) -> dict[str, Any]:
    """Return what the grant events and a plan's detail say about a grant."""
    return {
        "id": grant.pk,
        "tool": grant.tool,
        "agent": grant.agent,
        "scope": grant.scope,
        "created_by": grant.created_by.get_username() if grant.created_by is not None else None,
        "created_at": grant.created_at,
    }
