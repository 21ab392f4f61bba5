"""Serializers for plans: the request body of a submission (documentation) and the responses."""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from execution.models import Event, StateTransition
from plans.models import FailurePolicy, Plan, Subtask
from plans.validation import (
    AGENT_MAX_LENGTH,
    DEFAULT_MAX_PARALLEL,
    DEFAULT_MAX_RETRIES,
    KEY_MAX_LENGTH,
    KEY_PATTERN,
    MAX_PARALLEL_LIMIT,
    MAX_RETRIES_LIMIT,
)


class SubtaskSubmitSerializer(serializers.Serializer):
    key = serializers.RegexField(KEY_PATTERN.pattern, max_length=KEY_MAX_LENGTH, help_text="Unique within the plan.")
    description = serializers.CharField()
    agent = serializers.CharField(max_length=AGENT_MAX_LENGTH, help_text="A registered agent (GET /agents/).")
    depends_on = serializers.ListField(child=serializers.CharField(), default=list, help_text="Keys of other subtasks.")
    input = serializers.DictField(required=False, help_text="Passed to the agent.")
    max_retries = serializers.IntegerField(min_value=0, max_value=MAX_RETRIES_LIMIT, default=DEFAULT_MAX_RETRIES)
    timeout_s = serializers.IntegerField(min_value=1, required=False, allow_null=True)


class PlanSubmitSerializer(serializers.Serializer):
    """A plan as clients submit it; validated by plans.validation, documented here."""

    goal = serializers.CharField()
    session_id = serializers.CharField(required=False, max_length=255)
    max_parallel = serializers.IntegerField(min_value=1, max_value=MAX_PARALLEL_LIMIT, default=DEFAULT_MAX_PARALLEL)
    failure_policy = serializers.ChoiceField(choices=FailurePolicy.choices, default=FailurePolicy.FAIL_FAST)
    requires_approval = serializers.BooleanField(default=True)
    auto_execute = serializers.BooleanField(default=True)
    metadata = serializers.DictField(required=False)
    callback_url = serializers.URLField(required=False, help_text="Receives every event (needs WEBHOOK_SECRET).")
    subtasks = SubtaskSubmitSerializer(many=True)


class CancelSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=10_000)


class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    done = serializers.IntegerField()
    failed = serializers.IntegerField()
    running = serializers.IntegerField()
    pending = serializers.IntegerField(help_text="Pending and queued.")
    waiting_approval = serializers.IntegerField()
    skipped = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    percentage = serializers.FloatField(help_text="100 x done / total.")


class PlanStatusSerializer(serializers.Serializer):
    plan_id = serializers.UUIDField()
    status = serializers.CharField()
    state = serializers.CharField(allow_null=True, help_text="The execution's state; null before it starts.")
    progress = ProgressSerializer()
    current_subtasks = serializers.ListField(child=serializers.CharField())
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)


class SubtaskSerializer(serializers.ModelSerializer):
    depends_on = serializers.SerializerMethodField()
    result = serializers.JSONField(allow_null=True)
    input = serializers.JSONField()
    tool_calls = serializers.JSONField()

    class Meta:
        model = Subtask
        fields = [
            "id",
            "key",
            "description",
            "agent",
            "status",
            "depends_on",
            "input",
            "result",
            "error",
            "attempts",
            "max_retries",
            "timeout_s",
            "batch_index",
            "tool_calls",
            "queued_at",
            "started_at",
            "completed_at",
        ]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_depends_on(self, subtask: Subtask) -> list[str]:
        return self.context["depends_on"].get(subtask.pk, [])


class ExecutionSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    state = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class PlanSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.get_username")
    execution_state = serializers.SerializerMethodField()
    metadata = serializers.JSONField()

    class Meta:
        model = Plan
        fields = [
            "id",
            "goal",
            "session_id",
            "owner",
            "status",
            "execution_state",
            "max_parallel",
            "failure_policy",
            "requires_approval",
            "auto_execute",
            "metadata",
            "callback_url",
            "created_at",
            "updated_at",
            "approved_at",
            "started_at",
            "completed_at",
        ]

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_execution_state(self, plan: Plan) -> str | None:
        # A missing one-to-one raises a subclass of AttributeError, so getattr's default applies.
        execution = getattr(plan, "execution", None)
        return execution.state if execution is not None else None


class PlanDetailSerializer(PlanSerializer):
    execution = serializers.SerializerMethodField()
    subtasks = serializers.SerializerMethodField()

    class Meta(PlanSerializer.Meta):
        fields = [*PlanSerializer.Meta.fields, "execution", "subtasks"]

    @extend_schema_field(ExecutionSerializer(allow_null=True))
    def get_execution(self, plan: Plan) -> dict[str, Any] | None:
        execution = getattr(plan, "execution", None)
        return ExecutionSerializer(execution).data if execution is not None else None

    @extend_schema_field(SubtaskSerializer(many=True))
    def get_subtasks(self, plan: Plan) -> Any:
        return SubtaskSerializer(self.context["subtasks"], many=True, context=self.context).data


class TransitionSerializer(serializers.ModelSerializer):
    metadata = serializers.JSONField()

    class Meta:
        model = StateTransition
        fields = ["id", "from_state", "to_state", "reason", "actor", "metadata", "created_at"]


class EventSerializer(serializers.ModelSerializer):
    payload = serializers.JSONField()

    class Meta:
        model = Event
        fields = ["seq", "type", "payload", "created_at"]
