"""The decision form of the approvals admin: a reason and, for tool calls, edited arguments, the tool's result and
whether to remember the call (a grant)."""

import json
from typing import Any

from django import forms
from django.core.serializers.json import DjangoJSONEncoder

from approvals.models import Approval, ApprovalKind
from plans.json_values import json_problem


class PrettyJSONField(forms.JSONField):
    """A JSON field shown indented; empty means no value (None), invalid JSON is a form error.

    So is JSON the database cannot store, or nested too deep to handle (the API refuses
    both the same way).
    """

    def to_python(self, value: Any) -> Any:
        try:
            parsed = super().to_python(value)
        except RecursionError:
            raise forms.ValidationError("This JSON is nested too deeply.") from None
        problem = json_problem(parsed) if parsed is not None else ""
        if problem:
            raise forms.ValidationError(problem)
        return parsed

    def bound_data(self, data: Any, initial: Any) -> Any:
        # Shown again after an error: text that fails to parse is kept as typed.
        try:
            return super().bound_data(data, initial)
        except RecursionError:
            return forms.fields.InvalidJSONInput(data)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        if value is None:
            return ""
        return json.dumps(value, indent=2, ensure_ascii=False, cls=DjangoJSONEncoder)


class DecisionForm(forms.Form):
    reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Why (shown to the agent when rejecting)"}),
    )
    arguments = PrettyJSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="The arguments the agent asked for, as a JSON object. Edit them to approve with other arguments.",
    )
    result = PrettyJSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": '{"content": "…"}  or  "done"'}),
        help_text="Optional: the tool's output as JSON, sent to the agent with the approval.",
    )
    remember = forms.ChoiceField(
        required=False,
        label="Remember",
        choices=[("", "no: ask for each call"), ("plan", "for this plan"), ("session", "for the plan's session")],
        help_text="Approving: approve this agent's later calls of this tool at once (the plan lists its grants).",
    )

    def __init__(self, *args: Any, approval: Approval, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"arguments": approval.arguments})
        super().__init__(*args, **kwargs)
        self.approval = approval
        if approval.kind != ApprovalKind.TOOL_CALL:
            del self.fields["arguments"]
            del self.fields["result"]
            del self.fields["remember"]

    def clean_arguments(self) -> dict[str, Any] | None:
        arguments = self.cleaned_data.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            raise forms.ValidationError("The arguments must be a JSON object.")
        return arguments

    def decision(self, *, approve: bool = True) -> dict[str, Any]:
        """Return the keyword arguments of approval_decide this form asks for (besides approve)."""
        decision: dict[str, Any] = {"reason": self.cleaned_data.get("reason", "")}
        if self.approval.kind == ApprovalKind.TOOL_CALL:
            arguments = self.cleaned_data.get("arguments")
            # Unchanged arguments are no edit: the approval keeps edited_arguments empty.
            decision["arguments"] = None if arguments == self.approval.arguments else arguments
            decision["result"] = self.cleaned_data.get("result")
            if approve:
                decision["remember"] = self.cleaned_data.get("remember") or None
        return decision
