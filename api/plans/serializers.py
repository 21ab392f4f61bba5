"""Serializers for plans: the request body of a submission (documentation) and the responses."""

from dataclasses import replace
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.approvals.serializers import GrantSerializer
from api.model_serializers import ModelSerializer
from approvals.grants import grant_payload, grants_of_plan
from execution.models import Event
from plans.models import FailurePolicy, Plan, PlanRevision, Subtask
from plans.revisions import REVISABLE
from plans.services import plan_limits
from plans.shape import Field, plan_fields, subtask_fields

# The models' labels, so the request's enums are the responses' (one FailurePolicyEnum in the schema).
CHOICE_LABELS = dict(FailurePolicy.choices)


def _serializer_field(field: Field, subtasks: type[serializers.Serializer] | None = None) -> serializers.Field:
    """Return the DRF field that documents a shape field, with the same limits."""
    options: dict[str, Any] = {"help_text": field.help}
    if not field.required:
        options["required"] = False
        if field.default is not None:
            options["default"] = field.initial
    if field.nullable:
        options["allow_null"] = True
    if field.kind == "subtasks":
        assert subtasks is not None
        return serializers.ListField(
            child=subtasks(), min_length=1, max_length=field.max_items, required=field.required, help_text=field.help
        )
    if field.kind == "text":
        text = {"max_length": field.max_length, "allow_blank": field.blank, **options}
        return serializers.RegexField(field.pattern, **text) if field.pattern else serializers.CharField(**text)
    if field.kind == "integer":
        return serializers.IntegerField(min_value=field.minimum, max_value=field.maximum, **options)
    if field.kind == "url":
        return serializers.URLField(max_length=field.max_length, allow_blank=True, **options)
    if field.kind == "keys":
        return serializers.ListField(child=serializers.CharField(), max_length=field.max_items, **options)
    kinds: dict[str, Any] = {
        "boolean": serializers.BooleanField,
        "object": serializers.DictField,
        "choice": lambda **more: serializers.ChoiceField(
            choices=[(value, CHOICE_LABELS.get(value, value)) for value in field.choices], **more
        ),
    }
    return kinds[field.kind](**options)


def _submit_serializer(name: str, fields: tuple[Field, ...], **nested: Any) -> type[serializers.Serializer]:
    declared = {field.name: _serializer_field(field, **nested) for field in fields}
    return type(name, (serializers.Serializer,), {**declared, "__module__": __name__})


# Built from plans/shape.py with the configured limits: what the schema shows is what validation enforces.
SubtaskSubmitSerializer = _submit_serializer("SubtaskSubmitSerializer", subtask_fields(plan_limits()))
PlanSubmitSerializer = _submit_serializer(
    "PlanSubmitSerializer", plan_fields(plan_limits()), subtasks=SubtaskSubmitSerializer
)

# A revision: any of the revisable fields, none required and none defaulted (what is left out stays as it is).
PlanReviseSerializer = _submit_serializer(
    "PlanReviseSerializer",
    tuple(replace(each, required=False, default=None) for each in plan_fields(plan_limits()) if each.name in REVISABLE),
    subtasks=SubtaskSubmitSerializer,
)


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


class SubtaskSerializer(ModelSerializer):
    depends_on = serializers.SerializerMethodField()
    result = serializers.JSONField(allow_null=True)
    input = serializers.JSONField()
    tool_calls = serializers.JSONField()
    conversation = serializers.JSONField(help_text="A language-model agent's messages, as sent and received.")
    usage = serializers.JSONField(help_text="Token usage of the subtask's model calls: totals and one entry per call.")

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
            "conversation",
            "usage",
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


class PlanSerializer(ModelSerializer):
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
            "revision",
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
    subtasks_count = serializers.SerializerMethodField()
    subtasks_next = serializers.SerializerMethodField()
    subtasks_previous = serializers.SerializerMethodField()
    grants = serializers.SerializerMethodField()

    class Meta(PlanSerializer.Meta):
        fields = [
            *PlanSerializer.Meta.fields,
            "execution",
            "subtasks",
            "subtasks_count",
            "subtasks_next",
            "subtasks_previous",
            "grants",
        ]

    @extend_schema_field(serializers.IntegerField(help_text="How many subtasks the plan has, on every page."))
    def get_subtasks_count(self, plan: Plan) -> int:
        return int(self.context["page"].count)

    @extend_schema_field(
        serializers.URLField(allow_null=True, help_text="The next page of subtasks; null on the last.")
    )
    def get_subtasks_next(self, plan: Plan) -> str | None:
        return self.context["page"].next

    @extend_schema_field(
        serializers.URLField(allow_null=True, help_text="The previous page of subtasks; null on the first.")
    )
    def get_subtasks_previous(self, plan: Plan) -> str | None:
        return self.context["page"].previous

    @extend_schema_field(
        GrantSerializer(
            many=True, help_text="Tool calls remembered by an approving vote: this plan's, and its session's (owner's)."
        )
    )
    def get_grants(self, plan: Plan) -> Any:
        return GrantSerializer([grant_payload(grant) for grant in grants_of_plan(plan)], many=True).data

    @extend_schema_field(ExecutionSerializer(allow_null=True))
    def get_execution(self, plan: Plan) -> dict[str, Any] | None:
        execution = getattr(plan, "execution", None)
        return ExecutionSerializer(execution).data if execution is not None else None

    @extend_schema_field(
        SubtaskSerializer(many=True, help_text="A page of the subtasks, in run order: all of them when they fit.")
    )
    def get_subtasks(self, plan: Plan) -> Any:
        return SubtaskSerializer(self.context["subtasks"], many=True, context=self.context).data


class TransitionSerializer(serializers.Serializer):
    """An entry of a plan's status history (execution/selectors.py: HistoryEntry)."""

    id = serializers.IntegerField(
        allow_null=True, help_text="The transition's number; null in the draft's review (revisions, changes requested)."
    )
    from_state = serializers.CharField()
    to_state = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)
    actor = serializers.CharField(allow_blank=True)
    metadata = serializers.JSONField()
    created_at = serializers.DateTimeField()


class RevisionDiffSerializer(serializers.Serializer):
    revision = serializers.IntegerField()
    added = serializers.ListField(child=serializers.CharField(), help_text="Keys of the subtasks added.")
    removed = serializers.ListField(child=serializers.CharField(), help_text="Keys of the subtasks removed.")
    changed = serializers.ListField(
        child=serializers.CharField(),
        help_text="Keys of the subtasks whose description, agent, depends_on, input, max_retries or timeout_s changed.",
    )
    subtask_fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="For each changed subtask, the names of the fields that changed.",
    )
    plan_fields = serializers.ListField(
        child=serializers.CharField(), help_text="The plan's own fields that changed (goal, max_parallel...)."
    )


class ChangeRequestSerializer(serializers.Serializer):
    reason = serializers.CharField()
    requested_by = serializers.CharField()
    requested_at = serializers.DateTimeField()
    approval_id = serializers.UUIDField()


class RevisionSerializer(ModelSerializer):
    author = serializers.CharField(source="author.get_username", allow_null=True, default=None)
    content = serializers.JSONField(help_text="The submission as accepted, every default filled in.")
    diff = RevisionDiffSerializer(allow_null=True, help_text="From the previous revision; null for revision 1.")
    change_requests = ChangeRequestSerializer(
        many=True, help_text="Rejections of the plan approval that asked for changes to this revision."
    )

    class Meta:
        model = PlanRevision
        fields = ["revision", "created_at", "author", "content", "diff", "change_requests"]


class EventSerializer(ModelSerializer):
    payload = serializers.JSONField()

    class Meta:
        model = Event
        fields = ["seq", "type", "payload", "created_at"]
