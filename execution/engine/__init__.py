"""The engine, one module per question a reader has.

    plan_flow      how a plan moves: approved and started, batches dispatched and advanced,
                   ended, failed fast, cancelled; the plan's lock
    runs           how one run goes: its start, the agent call, its outcome, retries,
                   leases, runs killed at the hard limit or lost with their workers
    waits          how a wait is decided and resumed: tool calls put a subtask to wait,
                   a decision resumes it
    reconciler     how the reconciler repairs what lost messages and dead workers left
    approval_gate  the Protocol through which the engine asks for approvals and withdraws
                   them (the approvals app registers its implementation)

Imports run plan_flow <- waits <- runs <- reconciler. Every status change is written by
execution/transitions.py; every message is built by execution/canvas.py.
"""
