"""App config for approvals: registers the engine's approval gate (ApprovalsGate) when Django starts."""

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
