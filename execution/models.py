"""Execution records: one ExecutionState per plan run, its transition history, the event log, MCP listings."""

import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q

from plans.models import Plan


class ExecState(models.TextChoices):
    PREPARING = "preparing"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    RESUMED = "resumed"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ExecutionState(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    plan = models.OneToOneField(Plan, on_delete=models.CASCADE, related_name="execution")
    state = models.CharField(max_length=16, choices=ExecState.choices, default=ExecState.PREPARING)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["state"], name="execution_state")]
        constraints = [models.CheckConstraint(condition=Q(state__in=ExecState.values), name="execution_state_valid")]

    def __str__(self) -> str:
        return f"{self.plan_id}: {self.state}"


class StateTransition(models.Model):
    """One change of an ExecutionState: the audit trail."""

    execution = models.ForeignKey(ExecutionState, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=16, choices=ExecState.choices)
    to_state = models.CharField(max_length=16, choices=ExecState.choices)
    reason = models.TextField(blank=True, default="")
    actor = models.CharField(max_length=150, default="system")
    metadata = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["execution", "id"]
        indexes = [models.Index(fields=["execution", "id"], name="transition_execution")]

    def __str__(self) -> str:
        return f"{self.from_state} -> {self.to_state}"


class Event(models.Model):
    """An entry of a plan's ordered, durable event log; `seq` counts from 1 per plan."""

    # Indexed by (plan, seq), the unique constraint below.
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="events", db_index=False)
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=64)
    payload = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["plan", "seq"]
        constraints = [models.UniqueConstraint(fields=["plan", "seq"], name="event_unique_seq")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}"


class WebhookSecret(models.Model):
    """The key that signs the webhooks of one owner's plans (Standard Webhooks), shown to its owner once.

    A rotation keeps the key it replaces signing too, until `previous_until`, so receivers
    can switch keys without refusing a delivery in between.
    """

    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="webhook_secret"
    )
    # "whsec_" and the base64 of 32 random bytes, as Standard Webhooks libraries take it.
    secret = models.CharField(max_length=64)
    previous = models.CharField(max_length=64, blank=True, default="")
    previous_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"webhook secret of user {self.owner_id}"


class McpListing(models.Model):
    """The tools an MCP server of an agent listed last, as its model was offered them (shown by GET /agents/).

    Written by the worker that listed them; `fingerprint` is the server definition's at the
    time, so a listing made under another definition is not shown as the current one's.
    """

    agent = models.CharField(max_length=64)
    server = models.CharField(max_length=32)
    fingerprint = models.CharField(max_length=16)
    tools = models.JSONField(default=list)
    listed_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "server"], name="mcp_listing_unique_server")]

    def __str__(self) -> str:
        return f"{self.agent}/{self.server}: {len(self.tools)} tools"
