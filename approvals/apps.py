"""App config for approvals: checks the policy file and registers the engine's approval gate when Django starts."""

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Models are importable only once the apps are ready; the engine calls this gate to ask
        # for approvals and withdraw them (execution/engine/approval_gate.py).
        from approvals.services import ApprovalsGate
        from execution.engine.approval_gate import approval_gate_register

        approval_gate_register(ApprovalsGate())
        # As with the agents file (execution/apps.py): a bad policy file stops every process
        # at start, with one line naming the rule and the field. SystemExit, because Celery
        # logs and swallows exceptions raised while it sets Django up.
        from approvals.policy import policy_load
        from approvals.rules import PolicyFileError

        try:
            policy_load()
        except PolicyFileError as error:
            raise SystemExit(str(error)) from None
