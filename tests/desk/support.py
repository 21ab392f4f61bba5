"""Admin test helpers: users with each kind of access, and plans caught in the states the pages show."""

from typing import Any

from django.contrib.auth.models import Permission
from django.test import Client

from approvals.models import Approval, ApprovalKind
from approvals.services import approval_request
from execution.models import ExecState, ExecutionState
from execution.services import plan_submit
from plans.models import Plan, PlanStatus, SubtaskStatus
from tests.support.factories import UserFactory, plan_data, plan_recount, subtask


def staff(username: str, *, permission: bool = False, superuser: bool = False):
    user = UserFactory(username=username, is_staff=True, is_superuser=superuser)
    if permission:
        user.user_permissions.add(Permission.objects.get(codename="decide_approval"))  # type: ignore[attr-defined]
    return user


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def running_plan(owner, *subtasks: dict[str, Any], **fields: Any) -> Plan:
    """Submit a plan that starts at once; its messages would go out on commit, which never comes in these tests."""
    return plan_submit(owner=owner, data=plan_data(*(subtasks or (subtask("a"),)), requires_approval=False, **fields))


def waiting_tool_call(
    owner, *, tool: str = "write_file", arguments: dict | None = None, goal: str = "Edit"
) -> Approval:
    """Return a pending tool-call approval with its subtask and execution waiting, as the engine leaves them."""
    arguments = {"path": "lib/main.dart"} if arguments is None else arguments
    plan = running_plan(
        owner, subtask("edit", input={"tool_calls": [{"tool": tool, "arguments": arguments}]}), goal=goal
    )
    edit = plan.subtasks.get()
    approval = approval_request(
        plan=plan, kind=ApprovalKind.TOOL_CALL, subtask=edit, call_index=0, tool=tool, arguments=arguments
    )
    call = {
        "tool": tool,
        "arguments": arguments,
        "requires_approval": True,
        "status": "pending",
        "result": None,
        "approval_id": str(approval.pk),
    }
    plan.subtasks.update(status=SubtaskStatus.WAITING_APPROVAL, attempts=1, tool_calls=[call])
    plan_recount(plan_id=plan.pk)
    ExecutionState.objects.filter(plan=plan).update(state=ExecState.WAITING_APPROVAL)
    return approval


def failed_plan(owner, *subtasks: dict[str, Any]) -> Plan:
    """Return a plan whose subtasks all failed, as fail_fast leaves it."""
    plan = running_plan(owner, *subtasks)
    plan.subtasks.update(status=SubtaskStatus.FAILED, attempts=1, error="Scripted failure")
    plan_recount(plan_id=plan.pk)
    Plan.objects.filter(pk=plan.pk).update(status=PlanStatus.FAILED)
    ExecutionState.objects.filter(plan=plan).update(state=ExecState.FAILED)
    return Plan.objects.get(pk=plan.pk)
