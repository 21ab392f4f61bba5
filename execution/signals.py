"""Signals the engine sends so the approvals app can act without the engine importing it.

Each is sent inside the engine's transaction, under the plan's lock; receivers write in
that same transaction.
"""

from django.dispatch import Signal

# A submitted plan needs a human's approval before it starts. kwargs: plan (Plan)
plan_approval_requested = Signal()

# A running subtask asked for a tool call that needs a human's approval.
# kwargs: subtask (Subtask), approval_id (UUID, the id the Approval is to take),
# call_index (int), tool (str), arguments (dict)
tool_call_requested = Signal()

# Waits that can no longer be resumed: the plan was cancelled or failed, or the subtasks
# stopped. kwargs: plan_id (UUID), subtask_ids (list[UUID] | None: the whole plan,
# including its plan approval), reason (str)
waits_cancelled = Signal()
