"""The terminal side of `manage.py plans`: rich tables, live progress, and prompts for pending approvals.

What clients and models wrote (goals, keys, agents, tools, arguments, errors) is shown as
plain Text, never parsed as Rich markup, with control and bidirectional characters written
out (common/text.py): it can neither crash the screen nor restyle or rewrite what an
operator reads before deciding. A model's answer streamed while the plans are watched
(`agent.message.delta`, execution/deltas.py) is shown as it arrives, escaped the same way.
"""

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO
from uuid import UUID

import psycopg
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Prefetch
from django.utils import timezone
from django.utils.timesince import timesince
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.prompt import Prompt
from rich.table import Table
from rich.text import Text

from approvals.errors import AlreadyDecided, AlreadyVoted, VoteInvalid, VoteRefused
from approvals.models import Approval, ApprovalKind, ApprovalStatus, Channel, Vote, VoteDecision
from approvals.selectors import approvals_visible_to, can_decide
from approvals.services import approval_decide
from common.palette import STATUS_COLOURS, status_colour
from common.text import printable
from execution.deltas import DELTA_CHANNEL
from execution.events import NOTIFY_CHANNEL
from execution.models import ExecutionState
from execution.selectors import current_subtask_keys, plan_progress
from execution.states import PLAN_FINISHED
from execution.transitions import TransitionNotAllowed
from plans.models import Plan

# Without a notification, the screen is refreshed this often anyway (a missed NOTIFY costs at most this).
REFRESH_S = 2.0
SUBTASK_ROWS = 200
# How much of each answer being written the live screen shows (its end).
ANSWER_TAIL = 300


def styled(status: str) -> Text:
    """Return a status word in its colour."""
    return Text(status.replace("_", " "), style=status_colour(status) if status in STATUS_COLOURS else "")


def short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compact_json(value: Any, limit: int = 80) -> str:
    return short(json.dumps(value, ensure_ascii=False, sort_keys=True), limit)


def shown(text: str, limit: int | None = None) -> Text:
    """Return text from a client or a model as one line of plain Text, cut after `limit` characters."""
    return Text(printable(short(text, limit) if limit else text, multiline=False))


@dataclass
class PlanView:
    plan: Plan
    progress: dict[str, Any]
    current: list[str]

    @property
    def state(self) -> str:
        try:
            return self.plan.execution.state
        except ExecutionState.DoesNotExist:
            return "—"


@dataclass
class Snapshot:
    """What the screen shows: the watched plans and their pending approvals."""

    views: list[PlanView]
    approvals: list[Approval] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return all(view.plan.status in PLAN_FINISHED for view in self.views)


def snapshot(*, plan_ids: Sequence[UUID], user: User) -> Snapshot:
    """Read the plans, their progress and their pending approvals (a few queries per plan)."""
    plans = Plan.objects.select_related("execution").in_bulk(plan_ids)
    views = [
        PlanView(
            plan=plans[plan_id], progress=plan_progress(plan_id=plan_id), current=current_subtask_keys(plan_id=plan_id)
        )
        for plan_id in plan_ids
        if plan_id in plans
    ]
    approvals = list(
        approvals_visible_to(user)
        .filter(plan_id__in=plan_ids, status=ApprovalStatus.PENDING)
        .select_related("plan", "subtask")
        .prefetch_related(Prefetch("votes", queryset=Vote.objects.select_related("user")))
        .order_by("requested_at")
    )
    return Snapshot(views=views, approvals=approvals)


# --- Rendering ------------------------------------------------------------------------------------


def plans_table(views: Iterable[PlanView]) -> Table:
    table = Table(title="Plans", title_justify="left", expand=False)
    table.add_column("plan")
    table.add_column("status")
    table.add_column("progress", min_width=24)
    table.add_column("done", justify="right")
    table.add_column("now")
    for view in views:
        progress = view.progress
        bar = ProgressBar(total=max(progress["total"], 1), completed=progress["done"], width=24)
        counts = f"{progress['done']}/{progress['total']} ({progress['percentage']:.0f}%)"
        extra = [f"{progress[name]} {name}" for name in ("failed", "skipped", "cancelled") if progress[name]]
        table.add_row(
            Text.assemble(shown(view.plan.goal, 48), "\n", (str(view.plan.pk), "dim")),
            Text.assemble(styled(view.plan.status), " / ", styled(view.state)),
            bar,
            counts + ("\n" + ", ".join(extra) if extra else ""),
            shown(", ".join(view.current), 40) if view.current else "—",
        )
    return table


def approvals_table(approvals: Sequence[Approval]) -> Table:
    table = Table(title="Pending approvals", title_justify="left")
    for column in ("#", "plan", "subtask", "agent", "tool", "arguments", "votes", "waiting"):
        table.add_column(column)
    for number, approval in enumerate(approvals, 1):
        subtask = approval.subtask
        table.add_row(
            str(number),
            shown(approval.plan.goal, 30),
            shown(subtask.key) if subtask is not None else "—",
            shown(subtask.agent) if subtask is not None else "—",
            shown(approval.tool, 40) if approval.kind == ApprovalKind.TOOL_CALL else "the plan",
            shown(compact_json(approval.arguments, 50)) if approval.kind == ApprovalKind.TOOL_CALL else "",
            votes_text(approval),
            timesince(approval.requested_at, depth=1),
        )
    return table


def votes_text(approval: Approval) -> Text | str:
    """Return "2 of 3 approvals: alice, bob" for an approval that needs several, else "—"."""
    if approval.quorum == 1:
        return "—"
    voters = [vote.user.get_username() for vote in approval.votes.all() if vote.decision == VoteDecision.APPROVE]
    return shown(f"{len(voters)} of {approval.quorum} approvals" + (f": {', '.join(voters)}" if voters else ""), 60)


def screen(state: Snapshot, answers: dict[str, str] | None = None) -> RenderableType:
    parts: list[RenderableType] = [plans_table(state.views)]
    if state.approvals:
        parts.append(approvals_table(state.approvals))
    for key, text in (answers or {}).items():
        tail = text[-ANSWER_TAIL:]
        parts.append(Text.assemble((printable(key, multiline=False), "bold"), " writes: ", printable(tail)))
    return Group(*parts)


def status_line(state: Snapshot) -> str:
    """Return one line per plan, for output that is not a terminal (logs, CI)."""
    lines = []
    for view in state.views:
        progress = view.progress
        waiting = [a for a in state.approvals if a.plan_id == view.plan.pk]
        lines.append(
            f"{view.plan.pk} {view.plan.status}/{view.state} "
            f"{progress['done']}/{progress['total']} done ({progress['percentage']:.0f}%)"
            + (f", {progress['failed']} failed" if progress["failed"] else "")
            + (f", now: {', '.join(view.current)}" if view.current else "")
            + (f", {len(waiting)} approval(s) pending" if waiting else "")
        )
    return "\n".join(lines)


def subtasks_table(plan: Plan) -> RenderableType:
    """Return the final table of a plan's subtasks (key, agent, status, attempts) under the plan's goal."""
    table = Table()
    for column in ("key", "agent", "status", "attempts"):
        table.add_column(column, justify="right" if column == "attempts" else "left")
    subtasks = plan.subtasks.order_by("batch_index", "position").only("key", "agent", "status", "attempts")
    total = plan.subtasks.count()
    for subtask in subtasks[:SUBTASK_ROWS]:
        table.add_row(shown(subtask.key), shown(subtask.agent), styled(subtask.status), str(subtask.attempts))
    if total > SUBTASK_ROWS:
        table.add_row(f"… {total - SUBTASK_ROWS} more", "", "", "")
    heading = Text.assemble(
        (printable(short(plan.goal, 100), multiline=False), "bold"), " ", styled(plan.status), f"  {plan.pk}"
    )
    return Group(heading, table)


def status_report(plan: Plan, user: User) -> RenderableType:
    """Return what `plans status` prints: progress, pending approvals and the subtasks."""
    state = snapshot(plan_ids=[plan.pk], user=user)
    parts: list[RenderableType] = [plans_table(state.views)]
    if state.approvals:
        parts.append(approvals_table(state.approvals))
    parts.append(subtasks_table(plan))
    return Group(*parts)


# --- Waiting for changes --------------------------------------------------------------------------


class PlanEvents:
    """Wake up when a watched plan logs an event: LISTEN on the events channel, or just wait when that fails."""

    def __init__(self, plan_ids: Iterable[UUID]) -> None:
        self.ids = {str(plan_id) for plan_id in plan_ids}
        self.conn: psycopg.Connection | None = None
        # Answer text that arrived while waiting: {subtask_key, step, delta, ...}, oldest first.
        self.deltas: list[dict[str, Any]] = []

    def __enter__(self) -> "PlanEvents":
        try:
            self.conn = psycopg.connect(**connection.get_connection_params(), autocommit=True)
            self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.conn.execute(f"LISTEN {DELTA_CHANNEL}")
        except psycopg.Error:
            self.conn = None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.conn is not None:
            self.conn.close()

    def wait(self, timeout: float) -> bool:
        """Return True as soon as a watched plan has a new event, False after `timeout` seconds without one."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.conn is None:
                time.sleep(left)
                return False
            try:
                for notify in self.conn.notifies(timeout=left, stop_after=1):
                    if notify.channel == DELTA_CHANNEL:
                        if self._delta(notify.payload):
                            return True
                    elif notify.payload.partition(":")[0] in self.ids:
                        return True
            except psycopg.Error:
                # The listening connection broke (e.g. a database restart): fall back to refreshing.
                self.conn = None
        return False

    def _delta(self, payload: str) -> bool:
        try:
            delta = json.loads(payload)
        except ValueError:
            return False
        if not isinstance(delta, dict) or delta.get("plan_id") not in self.ids:
            return False
        self.deltas.append(delta)
        return True

    def take_deltas(self) -> list[dict[str, Any]]:
        """Return (and forget) the answer text that arrived since the last call."""
        deltas, self.deltas = self.deltas, []
        return deltas


# --- Watching -------------------------------------------------------------------------------------


class WatchTimedOut(Exception):
    """The plans did not finish within the watch's timeout."""


@dataclass
class Watch:
    """Show the plans' progress until they finish; with input, ask about each pending approval once."""

    plan_ids: list[UUID]
    user: User
    console: Console
    interactive: bool
    stdin: TextIO | None = None
    timeout: float | None = None
    asked: set[UUID] = field(default_factory=set)
    # The text of each subtask's answer being written (by subtask key), for the live screen.
    answers: dict[str, str] = field(default_factory=dict)
    steps: dict[str, Any] = field(default_factory=dict)

    def run(self) -> Snapshot:
        """Watch until every plan has finished; return the last snapshot. Raise WatchTimedOut on timeout."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        live = Live(console=self.console, auto_refresh=False, transient=True) if self.console.is_terminal else None
        printed: object = None
        with PlanEvents(self.plan_ids) as events:
            if live is not None:
                live.start()
            try:
                while True:
                    state = snapshot(plan_ids=self.plan_ids, user=self.user)
                    self._show_deltas(events.take_deltas(), state, live)
                    if live is not None:
                        live.update(screen(state, self.answers), refresh=True)
                    elif (line := status_line(state)) != printed:
                        self.console.print(
                            Text(f"{timezone.localtime():%H:%M:%S} {printable(line)}"), highlight=False, soft_wrap=True
                        )
                        printed = line
                    if state.finished:
                        return state
                    if self.interactive and self._ask(state, live):
                        continue
                    if deadline is not None and time.monotonic() > deadline:
                        raise WatchTimedOut(f"Timed out after {self.timeout:.0f}s; the plans go on.")
                    events.wait(
                        REFRESH_S if deadline is None else max(0.0, min(REFRESH_S, deadline - time.monotonic()))
                    )
            finally:
                if live is not None:
                    live.stop()

    def _show_deltas(self, deltas: list[dict[str, Any]], state: Snapshot, live: Live | None) -> None:
        """Show answer text as it arrives: on the live screen, or as lines of its own when not a terminal."""
        running = {key for view in state.views for key in view.current}
        for delta in deltas:
            key, text = str(delta.get("subtask_key", "")), str(delta.get("delta", ""))
            if live is None:
                line = f"{printable(key, multiline=False)} > {printable(text, multiline=False)}"
                self.console.print(Text(line), highlight=False, soft_wrap=True)
            else:
                if self.steps.get(key) != delta.get("step"):
                    self.steps[key] = delta.get("step")
                    self.answers[key] = ""
                self.answers[key] = self.answers.get(key, "") + text
        # An answer is shown while its subtask runs.
        for key in [key for key in self.answers if key not in running]:
            del self.answers[key]
            self.steps.pop(key, None)

    def _ask(self, state: Snapshot, live: Live | None) -> bool:
        """Ask about the first approval not asked about yet; return whether a decision was sent."""
        for approval in state.approvals:
            if approval.pk in self.asked or not can_decide(self.user, approval):
                continue
            self.asked.add(approval.pk)
            if live is not None:
                live.stop()
            try:
                return self._decide(approval)
            except EOFError:
                self.interactive = False
                self.console.print("[dim]No more input: watching only.[/dim]")
                return False
            finally:
                if live is not None:
                    live.start()
        return False

    def _decide(self, approval: Approval) -> bool:
        console = self.console
        if approval.kind == ApprovalKind.TOOL_CALL and approval.subtask is not None:
            console.print(
                Text.assemble(
                    "\n",
                    (printable(approval.subtask.agent, multiline=False), "bold"),
                    " asks to call ",
                    (printable(approval.tool, multiline=False), "bold"),
                    " in subtask ",
                    (printable(approval.subtask.key, multiline=False), "bold"),
                    " of “",
                    shown(approval.plan.goal, 60),
                    "”",
                ),
                highlight=False,
            )
            # Whole, as it will be approved: indented JSON, every odd character written out.
            console.print(
                Text(printable(json.dumps(approval.arguments, ensure_ascii=False, indent=2))), highlight=False
            )
        else:
            console.print(
                Text.assemble("\nThe plan “", shown(approval.plan.goal, 60), "” waits for approval."), highlight=False
            )
        answer, reason = self._answer(approval)
        if answer == "s":
            console.print("Skipped; decide it later here, in the admin or through the API.")
            return False
        approve = answer == "a"
        request_changes = answer == "c"
        decision: dict[str, Any] = {}
        if approve and approval.kind == ApprovalKind.TOOL_CALL:
            decision["arguments"] = self._json("Edited arguments as a JSON object (empty: keep them)", obj=True)
            decision["result"] = self._json("The tool's result as JSON (empty: none)")
        try:
            approval_decide(
                approval_id=approval.pk,
                decided_by=self.user,
                approve=approve,
                reason=reason,
                request_changes=request_changes,
                channel=Channel.CLI,
                **decision,
            )
        except AlreadyDecided as error:
            console.print(f"[yellow]Not decided: it is already {error.status}.[/yellow]")
            return False
        except (AlreadyVoted, VoteRefused, VoteInvalid) as error:
            console.print(f"[yellow]Not decided: {error}[/yellow]")
            return False
        except TransitionNotAllowed as error:
            console.print(Text(f"Not decided: {printable(str(error))}", style="yellow"))
            return False
        if request_changes:
            console.print("[yellow]Sent back for changes: the plan stays a draft.[/yellow]")
        else:
            console.print("[green]Approved.[/green]" if approve else "[red]Rejected.[/red]")
        return True

    def _answer(self, approval: Approval) -> tuple[str, str]:
        """Ask what to do: a (approve), r (reject), c (request changes, a plan approval only) or s (skip); and why."""
        if approval.kind == ApprovalKind.PLAN:
            answer = self._prompt(
                "Approve, reject, request changes or skip?", choices=["a", "r", "c", "s"], default="s"
            )
        else:
            answer = self._prompt("Approve, reject or skip?", choices=["a", "r", "s"], default="s")
        if answer == "s":
            return answer, ""
        reason = self._prompt("What should change?" if answer == "c" else "Reason (optional)", default="")
        while answer == "c" and not reason:
            reason = self._prompt("Say what should change (the plan's owner revises it from this)", default="")
        return answer, reason

    def _prompt(self, question: str, *, choices: list[str] | None = None, default: str = "") -> str:
        return Prompt.ask(
            question,
            console=self.console,
            choices=choices,
            default=default,
            show_default=bool(default),
            stream=self.stdin,
        ).strip()

    def _json(self, question: str, *, obj: bool = False) -> Any:
        while True:
            text = self._prompt(question, default="")
            if not text:
                return None
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                self.console.print(Text(f"Not JSON: {error}.", style="red"))
                continue
            if obj and not isinstance(value, dict):
                self.console.print("[red]The arguments must be a JSON object.[/red]")
                continue
            return value
