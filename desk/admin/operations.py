"""Operator actions on plans in the admin: what applies, who may, and the one service call each makes."""

from collections.abc import Iterable
from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest
from django.utils.text import Truncator

from approvals.models import Channel
from approvals.services import plan_approve
from execution.selectors import execution_of
from execution.services import plan_cancel, plan_execute, plan_operations, plan_pause, plan_resume, subtasks_retry
from execution.transitions import TransitionNotAllowed
from plans.models import Plan, Subtask, SubtaskStatus
from plans.revisions import StaleRevision
from plans.selectors import can_approve, can_operate

S = SubtaskStatus


@dataclass(frozen=True)
class Operation:
    """An action on a plan: `label` on its button, `done` in the message after it."""

    name: str
    label: str
    done: str
    danger: bool = False


OPERATIONS = {
    op.name: op
    for op in [
        Operation("approve", "Approve plan", "approved"),
        Operation("execute", "Execute", "started"),
        Operation("pause", "Pause", "paused"),
        Operation("resume", "Resume", "resumed"),
        Operation("retry", "Retry failed subtasks", "retried"),
        Operation("cancel", "Cancel plan", "cancelled", danger=True),
    ]
}


def may_perform(user: User | AnonymousUser, plan: Plan, name: str) -> bool:
    """Return whether the user may perform the operation on the plan."""
    return can_approve(user, plan) if name == "approve" else can_operate(user, plan)


def operations_for(user: User | AnonymousUser, plan: Plan, *, failed_keys: list[str]) -> list[Operation]:
    """Return the operations that apply to the plan now and that the user may perform."""
    execution = execution_of(plan)
    applies = plan_operations(
        status=plan.status, state=execution.state if execution is not None else None, has_failed=bool(failed_keys)
    )
    return [op for name, op in OPERATIONS.items() if name in applies and may_perform(user, plan, name)]


def perform(
    name: str, *, plan: Plan, user: User, reason: str = "", key: str = "", revision: int | None = None
) -> list[str]:
    """Perform one operation through its service; return the subjects it acted on.

    Raise TransitionNotAllowed when the operation does not apply to the plan now, and
    StaleRevision when `revision` (the one the page showed) is no longer the plan's.
    """
    actor = user.get_username()
    if name == "approve":
        plan_approve(
            plan_id=plan.pk,
            user=user,
            expected_revisions=None if revision is None else [revision],
            channel=Channel.ADMIN,
        )
    elif name == "execute":
        plan_execute(plan_id=plan.pk, actor=actor)
    elif name == "pause":
        plan_pause(plan_id=plan.pk, actor=actor)
    elif name == "resume":
        plan_resume(plan_id=plan.pk, actor=actor)
    elif name == "cancel":
        plan_cancel(plan_id=plan.pk, actor=actor, reason=reason)
    elif name == "retry":
        keys = [key] if key else list(plan.subtasks.filter(status=S.FAILED).values_list("key", flat=True))
        subtasks_retry(plan_id=plan.pk, keys=keys, actor=actor)
        return [f"subtask {each!r}" for each in keys]
    else:
        raise ValueError(f"Unknown operation {name!r}")
    return []


def perform_and_report(
    request: HttpRequest, plans: Iterable[Plan], name: str, *, reason: str = "", key: str = "", revision: str = ""
) -> None:
    """Perform an operation on each plan, turning refusals into admin messages."""
    operation, done = OPERATIONS[name], []
    for plan in plans:
        label = Truncator(plan.goal).chars(60)
        if not may_perform(request.user, plan, name):
            messages.error(request, f"“{label}”: you may not {name} this plan.")
            continue
        try:
            # The admin lets in only staff: the user is authenticated.
            subjects = perform(
                name,
                plan=plan,
                user=request.user,  # type: ignore[arg-type]
                reason=reason,
                key=key,
                revision=int(revision) if revision.isdigit() else None,
            )
        except (TransitionNotAllowed, StaleRevision) as error:
            messages.error(request, f"“{label}”: {error}")
        except Subtask.DoesNotExist:
            messages.error(request, f"“{label}”: there is no subtask {key!r}.")
        else:
            done.append(f"“{label}”" + (f" ({', '.join(subjects)})" if subjects else ""))
    if done:
        messages.success(request, f"{operation.done.capitalize()}: {'; '.join(done)}.")


class PlanActionForm(ActionForm):
    reason = forms.CharField(
        required=False, label="Reason", widget=forms.TextInput(attrs={"placeholder": "reason (for cancel)"})
    )
