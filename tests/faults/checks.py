"""What the fault scenarios check beyond tests/support/invariants.py: the records agree with the history they left."""

from execution.models import ExecutionState, StateTransition
from plans.models import Plan


def history_problems(plan: Plan) -> list[str]:
    """Return where a status disagrees with the last change its history records (a half-applied transition)."""
    problems = []
    last_status: dict[str, str] = {}
    plan_status = None
    for kind, payload in plan.events.order_by("seq").values_list("type", "payload"):
        if "previous_status" not in payload:
            continue
        if kind.startswith("subtask."):
            last_status[payload["subtask_key"]] = payload["status"]
        elif kind.startswith("plan."):
            plan_status = payload["status"]
    for key, status in plan.subtasks.values_list("key", "status"):
        if last_status.get(key, "pending") != status:
            problems.append(f"{key!r} is {status}, its history says {last_status.get(key, 'pending')}")
    plan.refresh_from_db()
    if plan_status is not None and plan_status != plan.status:
        problems.append(f"the plan is {plan.status}, its history says {plan_status}")
    execution = ExecutionState.objects.filter(plan=plan).first()
    last = StateTransition.objects.filter(execution__plan=plan).order_by("-pk").first()
    if execution is not None and last is not None and last.to_state != execution.state:
        problems.append(f"the execution is {execution.state}, its history says {last.to_state}")
    return problems
