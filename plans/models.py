"""Plans and their subtasks: the goal, the pieces of work, and how they depend on each other."""

import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q

from plans.shape import (
    AGENT_MAX_LENGTH,
    CALLBACK_URL_MAX_LENGTH,
    DEFAULT_MAX_PARALLEL,
    DEFAULT_MAX_RETRIES,
    KEY_MAX_LENGTH,
    MAX_PARALLEL_LIMIT,
    MAX_RETRIES_LIMIT,
    SESSION_ID_MAX_LENGTH,
)


class PlanStatus(models.TextChoices):
    DRAFT = "draft"
    APPROVED = "approved"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FailurePolicy(models.TextChoices):
    FAIL_FAST = "fail_fast", "Fail fast"
    CONTINUE = "continue", "Continue independent branches"


class SubtaskStatus(models.TextChoices):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


# Sets of subtask statuses the engine (execution/states.py) and the partial indexes below share.
# A settled subtask is finished with; an unsettled one still holds its batch open.
SUBTASK_SETTLED = frozenset({SubtaskStatus.DONE, SubtaskStatus.FAILED, SubtaskStatus.SKIPPED, SubtaskStatus.CANCELLED})
SUBTASK_UNSETTLED = frozenset(SubtaskStatus) - SUBTASK_SETTLED
# Active: a message is (or should be) on its way or running, or a wait for a person.
SUBTASK_ACTIVE = SUBTASK_UNSETTLED - {SubtaskStatus.PENDING}


class Plan(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    goal = models.TextField()
    session_id = models.CharField(max_length=SESSION_ID_MAX_LENGTH, blank=True, default="", db_index=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="plans")
    status = models.CharField(max_length=16, choices=PlanStatus.choices, default=PlanStatus.DRAFT)
    max_parallel = models.PositiveSmallIntegerField(default=DEFAULT_MAX_PARALLEL)
    failure_policy = models.CharField(max_length=16, choices=FailurePolicy.choices, default=FailurePolicy.FAIL_FAST)
    requires_approval = models.BooleanField(default=True)
    auto_execute = models.BooleanField(default=True)
    metadata = models.JSONField(default=dict, blank=True)
    callback_url = models.URLField(max_length=CALLBACK_URL_MAX_LENGTH, blank=True, default="")
    # The number of its latest revision (PlanRevision): 1 at creation, one more per accepted change of the draft.
    revision = models.PositiveIntegerField(default=1, editable=False)
    # Sequence number of the plan's last event; bumped under the plan's row lock.
    last_event_seq = models.PositiveBigIntegerField(default=0, editable=False)
    # How many of its subtasks are in each status, changed in the statement that changes a
    # status (execution/events.py), so progress is read, never recounted.
    subtask_count = models.PositiveIntegerField(default=0, editable=False)
    pending_count = models.IntegerField(default=0, editable=False)
    queued_count = models.IntegerField(default=0, editable=False)
    running_count = models.IntegerField(default=0, editable=False)
    waiting_approval_count = models.IntegerField(default=0, editable=False)
    done_count = models.IntegerField(default=0, editable=False)
    failed_count = models.IntegerField(default=0, editable=False)
    skipped_count = models.IntegerField(default=0, editable=False)
    cancelled_count = models.IntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="plan_owner_created"),
            models.Index(fields=["status", "-created_at"], name="plan_status_created"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=PlanStatus.values), name="plan_status_valid"),
            models.CheckConstraint(
                condition=Q(failure_policy__in=FailurePolicy.values), name="plan_failure_policy_valid"
            ),
            models.CheckConstraint(
                condition=Q(max_parallel__gte=1, max_parallel__lte=MAX_PARALLEL_LIMIT), name="plan_max_parallel_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.goal[:60]} ({self.status})"


class Subtask(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by the plan-first unique and batch indexes below; no index of its own.
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="subtasks", db_index=False)
    key = models.CharField(max_length=KEY_MAX_LENGTH)
    description = models.TextField()
    agent = models.CharField(max_length=AGENT_MAX_LENGTH)
    depends_on = models.ManyToManyField(
        "self", symmetrical=False, through="SubtaskDependency", related_name="dependents", blank=True
    )
    input = models.JSONField(default=dict, blank=True)
    max_retries = models.PositiveSmallIntegerField(default=DEFAULT_MAX_RETRIES)
    timeout_s = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the configured default.")
    status = models.CharField(max_length=16, choices=SubtaskStatus.choices, default=SubtaskStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="How many times the agent was started.")
    # Retries used after agent errors (at most max_retries).
    retries = models.PositiveSmallIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # Position in the submitted list and in the batch order; both fix the run order.
    position = models.PositiveIntegerField()
    batch_index = models.PositiveIntegerField()
    # The agent's tool calls so far and the decisions on them, oldest first (execution/engine/waits.py).
    tool_calls = models.JSONField(default=list, blank=True)
    # What an agent keeps between its runs: a language model's messages, as sent and received.
    conversation = models.JSONField(default=list, blank=True)
    # Token usage of the subtask's model calls: totals and one entry per call.
    usage = models.JSONField(default=dict, blank=True)
    # What else its agent keeps between runs (an openai agent: the MCP tools it offered).
    agent_state = models.JSONField(default=dict, blank=True)
    # The Celery task id of the current dispatch, for revocation and the task results.
    task_id = models.CharField(max_length=64, blank=True, default="")
    # Runs lost to a dead or hung worker; past the configured limit the subtask is poison.
    lost_runs = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True, default="", help_text="Worker running the current attempt.")
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["plan", "batch_index", "position"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "key"], name="subtask_unique_key_per_plan"),
            models.CheckConstraint(condition=Q(status__in=SubtaskStatus.values), name="subtask_status_valid"),
            models.CheckConstraint(condition=Q(max_retries__lte=MAX_RETRIES_LIMIT), name="subtask_max_retries_range"),
        ]
        # Every index of a subtask takes an entry at each status change (a status in a partial
        # index's condition rules out PostgreSQL's HOT updates), so there are few: the unique
        # (plan, key), which also finds a plan's subtasks, the run order and the two partial ones below.
        indexes = [
            # A page of a plan's subtasks in run order (the plan's detail), read without sorting
            # them all: the detail of a plan of 10,000 subtasks costs what one of 100 does.
            models.Index(fields=["plan", "batch_index", "position"], name="subtask_run_order"),
            # The status endpoint's current subtasks, however many are still pending, and the
            # reconciler's scan of work that should be in flight.
            models.Index(
                fields=["plan", "batch_index", "position"],
                name="subtask_active",
                condition=Q(status__in=sorted(SUBTASK_ACTIVE)),
            ),
            # Advancing: the lowest batch with unsettled subtasks, however many have settled.
            models.Index(
                fields=["plan", "batch_index", "position"],
                name="subtask_unsettled",
                condition=Q(status__in=sorted(SUBTASK_UNSETTLED)),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class SubtaskDependency(models.Model):
    """`subtask` may start only after `depends_on` is done; both belong to one plan."""

    subtask = models.ForeignKey(Subtask, on_delete=models.CASCADE, related_name="dependency_links")
    depends_on = models.ForeignKey(Subtask, on_delete=models.CASCADE, related_name="dependent_links")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subtask", "depends_on"], name="dependency_unique"),
            models.CheckConstraint(condition=~Q(subtask=models.F("depends_on")), name="dependency_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.subtask_id} -> {self.depends_on_id}"


class PlanRevision(models.Model):
    """One accepted version of a plan: the submission as accepted, and what changed from the one before."""

    # Indexed by the unique (plan, revision) below.
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="revisions", db_index=False)
    revision = models.PositiveIntegerField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # The whole submission as accepted, every default filled in (plans/revisions.py: spec_content).
    content = models.JSONField()
    # From the previous revision (plans/revisions.py: content_diff) with its number; null for revision 1.
    diff = models.JSONField(null=True, blank=True)
    # Each rejection of the plan's approval that asked for changes to this revision:
    # [{reason, requested_by, requested_at, approval_id}], oldest first.
    change_requests = models.JSONField(default=list, blank=True, encoder=DjangoJSONEncoder)

    class Meta:
        ordering = ["plan", "revision"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "revision"], name="plan_revision_unique"),
            models.CheckConstraint(condition=Q(revision__gte=1), name="plan_revision_positive"),
        ]

    def __str__(self) -> str:
        return f"revision {self.revision} of {self.plan_id}"
