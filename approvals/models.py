"""Approvals: a human's go-ahead for a plan or for one tool call an agent asked to make."""

import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Case, F, Q, Value, When

from execution.agents.base import TOOL_NAME_MAX_LENGTH
from plans.models import Plan, Subtask
from plans.shape import AGENT_MAX_LENGTH, SESSION_ID_MAX_LENGTH


class ApprovalKind(models.TextChoices):
    PLAN = "plan"
    TOOL_CALL = "tool_call", "Tool call"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class Channel(models.TextChoices):
    """Where a vote or a decision came from."""

    API = "api", "API"
    ADMIN = "admin"
    CLI = "cli", "Command line"
    POLICY = "policy"
    EXPIRY = "expiry"
    GRANT = "grant"


# The approvals queue's order (the admin's): the pending ones first, oldest first; then the others, latest decided
# first; the newest id last, as the admin adds it. An index of the same expressions serves it (approval_queue).
QUEUE_ORDER = (
    Case(When(status=ApprovalStatus.PENDING, then=Value(0)), default=Value(1)).asc(),
    Case(When(status=ApprovalStatus.PENDING, then=F("requested_at"))).asc(nulls_last=True),
    F("decided_at").desc(nulls_last=True),
)


class Approval(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="approvals")
    subtask = models.ForeignKey(Subtask, on_delete=models.CASCADE, null=True, blank=True, related_name="approvals")
    kind = models.CharField(max_length=16, choices=ApprovalKind.choices)
    tool = models.CharField(max_length=TOOL_NAME_MAX_LENGTH, blank=True, default="")
    arguments = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    # Position of the tool call in its subtask's tool-call history (cleared when the subtask is retried).
    call_index = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    requested_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="decided_approvals"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")
    edited_arguments = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    result = models.JSONField(
        null=True, blank=True, encoder=DjangoJSONEncoder, help_text="The tool's output, sent by the client."
    )
    # What the rule that fitted asked for (approvals/rules.py); without one, the defaults.
    policy = models.JSONField(null=True, blank=True, help_text='The rule that decided how: {"rule", "decision"}.')
    approvers = models.JSONField(
        null=True, blank=True, help_text='"user:<name>" and "group:<name>"; null: the owner and the deciders.'
    )
    quorum = models.PositiveSmallIntegerField(default=1, help_text="Distinct approving voters needed.")
    separate_requester = models.BooleanField(default=False, help_text="The plan's owner may not vote.")
    on_expiry = models.CharField(max_length=8, default="reject", choices=[("reject", "reject"), ("approve", "approve")])
    channel = models.CharField(max_length=8, blank=True, default="", choices=Channel.choices)

    class Meta:
        ordering = ["requested_at"]
        permissions = [("decide_approval", "Can decide any approval")]
        indexes = [
            models.Index(fields=["requested_at"], name="approval_pending", condition=Q(status="pending")),
            models.Index(fields=["expires_at"], name="approval_pending_expiry", condition=Q(status="pending")),
            models.Index(fields=["plan", "status"], name="approval_plan_status"),
            models.Index(fields=["status", "-requested_at"], name="approval_status_requested"),
            models.Index(*QUEUE_ORDER, F("id").desc(), name="approval_queue"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=ApprovalStatus.values), name="approval_status_valid"),
            models.CheckConstraint(condition=Q(kind__in=ApprovalKind.values), name="approval_kind_valid"),
            models.CheckConstraint(
                condition=Q(kind=ApprovalKind.PLAN, subtask__isnull=True)
                | Q(kind=ApprovalKind.TOOL_CALL, subtask__isnull=False, call_index__isnull=False),
                name="approval_kind_matches_subject",
            ),
            models.UniqueConstraint(
                fields=["plan"],
                condition=Q(kind=ApprovalKind.PLAN, status=ApprovalStatus.PENDING),
                name="approval_one_pending_per_plan",
            ),
            models.CheckConstraint(condition=Q(quorum__gte=1), name="approval_quorum_positive"),
        ]

    def __str__(self) -> str:
        subject = f"{self.tool}" if self.kind == ApprovalKind.TOOL_CALL else "plan"
        return f"{subject} ({self.status})"


class VoteDecision(models.TextChoices):
    APPROVE = "approve"
    REJECT = "reject"


class Vote(models.Model):
    """One person's vote on an approval: at most one per person."""

    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="votes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="approval_votes")
    decision = models.CharField(max_length=8, choices=VoteDecision.choices)
    reason = models.TextField(blank=True, default="")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["approval", "user"], name="vote_one_per_user"),
            models.CheckConstraint(condition=Q(decision__in=VoteDecision.values), name="vote_decision_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.decision} by {self.user_id}"


class GrantScope(models.TextChoices):
    PLAN = "plan"
    SESSION = "session"


class Grant(models.Model):
    """An approving vote's `remember`: later calls of one tool by one agent approved at once (channel "grant").

    Scope "plan": in the plan the vote was cast in. Scope "session": in every plan of that
    plan's owner with the same session_id.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    scope = models.CharField(max_length=8, choices=GrantScope.choices)
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="grants", help_text="Where it was made.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", help_text="The plan's owner."
    )
    session_id = models.CharField(max_length=SESSION_ID_MAX_LENGTH, blank=True, default="")
    agent = models.CharField(max_length=AGENT_MAX_LENGTH)
    tool = models.CharField(max_length=TOOL_NAME_MAX_LENGTH)
    approval = models.ForeignKey(
        Approval, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", help_text="The remembered call."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="grants_made"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [
            models.Index(fields=["plan", "agent", "tool"], name="grant_plan_call"),
            models.Index(
                fields=["owner", "session_id", "agent", "tool"],
                name="grant_session_call",
                condition=Q(scope="session"),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(scope__in=GrantScope.values), name="grant_scope_valid"),
            models.CheckConstraint(
                condition=Q(scope=GrantScope.PLAN) | ~Q(session_id=""), name="grant_session_has_session_id"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tool} by {self.agent} ({self.scope})"
