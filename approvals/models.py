"""Approvals: a human's go-ahead for a plan or for one tool call an agent asked to make."""

import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q

from execution.agents.base import TOOL_NAME_MAX_LENGTH
from plans.models import Plan, Subtask


class ApprovalKind(models.TextChoices):
    PLAN = "plan"
    TOOL_CALL = "tool_call", "Tool call"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


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

    class Meta:
        ordering = ["requested_at"]
        permissions = [("decide_approval", "Can decide any approval")]
        indexes = [
            models.Index(fields=["requested_at"], name="approval_pending", condition=Q(status="pending")),
            models.Index(fields=["expires_at"], name="approval_pending_expiry", condition=Q(status="pending")),
            models.Index(fields=["plan", "status"], name="approval_plan_status"),
            models.Index(fields=["status", "-requested_at"], name="approval_status_requested"),
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
        ]

    def __str__(self) -> str:
        subject = f"{self.tool}" if self.kind == ApprovalKind.TOOL_CALL else "plan"
        return f"{subject} ({self.status})"
