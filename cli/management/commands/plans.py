"""`manage.py plans`: submit, inspect, approve, send back, revise and watch plans from a terminal."""

import json
import sys
import uuid
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.text import Text

from approvals.errors import AlreadyDecided, AlreadyVoted, VoteRefused
from approvals.models import Approval, ApprovalKind, ApprovalStatus, Channel
from approvals.selectors import can_decide
from approvals.services import approval_decide, plan_approve
from cli import console as ui
from cli.revisions import diff_report
from common.text import printable
from execution.services import plan_revise, plan_submit
from execution.transitions import TransitionNotAllowed
from plans.models import Plan, PlanRevision, PlanStatus
from plans.revisions import StaleRevision, content_diff
from plans.selectors import can_operate, plans_visible_to
from plans.services import TooManyActivePlans
from plans.validation import PlanInvalid

# Exit codes: 0 every plan completed; 1 a plan failed or was cancelled, or an action was refused;
# 2 bad input (unreadable file, invalid JSON or plan, unknown plan or user); 3 timed out; 130 interrupted.
EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_INTERRUPTED = 1, 2, 3, 130


class Command(BaseCommand):
    help = "Submit, inspect, approve and watch plans."
    # Tests hand the prompts their answers through call_command(..., stdin=...).
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

        submit = commands.add_parser("submit", help="Submit a plan from a JSON file ('-' for standard input).")
        submit.add_argument("file", metavar="FILE.json")
        submit.add_argument("--approve", action="store_true", help="Approve the plan at once (it then starts).")
        submit.add_argument("--watch", action="store_true", help="Then watch it until it finishes.")
        self._user_option(submit)
        self._watch_options(submit)

        status = commands.add_parser("status", help="Show plans' progress, pending approvals and subtasks.")
        status.add_argument("plan_ids", nargs="+", metavar="ID")
        self._user_option(status)

        approve = commands.add_parser("approve", help="Approve a draft plan.")
        approve.add_argument("plan_id", metavar="ID")
        self._user_option(approve)

        reject = commands.add_parser("reject", help="Reject a draft plan's pending approval (it is then cancelled).")
        reject.add_argument("plan_id", metavar="ID")
        reject.add_argument("--reason", required=True, help="Why; with --request-changes, what to change.")
        reject.add_argument(
            "--request-changes",
            dest="request_changes",
            action="store_true",
            help="Keep the plan a draft for its owner to revise instead of cancelling it.",
        )
        self._user_option(reject)

        revise = commands.add_parser(
            "revise", help="Revise a draft plan from a JSON file ('-' for standard input), as a submission is written."
        )
        revise.add_argument("plan_id", metavar="ID")
        revise.add_argument("file", metavar="FILE.json")
        revise.add_argument(
            "--if-match", dest="if_match", type=int, metavar="REVISION", help="Refuse unless the plan is at REVISION."
        )
        self._user_option(revise)

        diff = commands.add_parser(
            "diff", help="Show what changed between two revisions (default: the current one and the one before)."
        )
        diff.add_argument("plan_id", metavar="ID")
        diff.add_argument("revisions", nargs="*", type=int, metavar="REVISION", help="REV_A [REV_B]")
        self._user_option(diff)

        watch = commands.add_parser("watch", help="Watch plans until they finish, deciding approvals at a prompt.")
        watch.add_argument("plan_ids", nargs="+", metavar="ID")
        self._user_option(watch)
        self._watch_options(watch)

    def _user_option(self, parser: CommandParser) -> None:
        parser.add_argument("--user", metavar="NAME", help="Act as this user (default: the first active superuser).")

    def _watch_options(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-input", dest="no_input", action="store_true", help="Never prompt: only show progress."
        )
        parser.add_argument("--timeout", type=float, metavar="SECONDS", help="Stop watching after this long.")

    def handle(self, *args: Any, **options: Any) -> None:
        # Rich writes partial lines and cursor moves; the wrapper must not add line endings.
        self.stdout.ending = ""
        self.console = Console(file=self.stdout, width=None if self.stdout.isatty() else 120)  # type: ignore[arg-type]
        self.stdin = options.get("stdin")
        user = self._user(options["user"])
        command = options["command"]
        if command == "submit":
            self.submit(
                user,
                Path(options["file"]),
                approve=options["approve"],
                watch=options["watch"],
                no_input=options["no_input"],
                timeout=options["timeout"],
            )
        elif command == "status":
            for plan_id in options["plan_ids"]:
                self.console.print(ui.status_report(self._plan(plan_id, user), user))
        elif command == "approve":
            plan = self.approve(self._plan(options["plan_id"], user), user)
            self.console.print(f"Approved plan {plan.pk}: it is {plan.status}.", highlight=False, soft_wrap=True)
        elif command == "watch":
            plans = [self._plan(plan_id, user) for plan_id in options["plan_ids"]]
            self.watch(plans, user, no_input=options["no_input"], timeout=options["timeout"])
        elif command == "reject":
            self.reject(self._plan(options["plan_id"], user), user, options["reason"], options["request_changes"])
        elif command == "revise":
            self.revise(self._plan(options["plan_id"], user), user, Path(options["file"]), options["if_match"])
        elif command == "diff":
            self.diff(self._plan(options["plan_id"], user), options["revisions"])

    # --- the actions: each one service call

    def submit(
        self, user: User, path: Path, *, approve: bool, watch: bool, no_input: bool, timeout: float | None
    ) -> None:
        data = self._read_json(path)
        try:
            plan = plan_submit(owner=user, data=data)
        except PlanInvalid as error:
            details = f" Details: {json.dumps(error.details, ensure_ascii=False)}" if error.details else ""
            raise CommandError(
                printable(f"Invalid plan ({error.code}): {error.message}{details}"), returncode=EXIT_USAGE
            ) from None
        except TooManyActivePlans as error:
            raise CommandError(printable(f"Refused ({error.code}): {error.message}"), returncode=EXIT_USAGE) from None
        self.console.print(
            Text.assemble(f"Submitted plan {plan.pk} “", ui.shown(plan.goal, 60), f"”: {plan.status}."),
            highlight=False,
            soft_wrap=True,
        )
        if approve and plan.status == PlanStatus.DRAFT:
            plan = self.approve(plan, user)
            self.console.print(f"Approved: it is {plan.status}.", highlight=False, soft_wrap=True)
        elif plan.status == PlanStatus.DRAFT:
            self.console.print(
                f"It waits for approval: manage.py plans approve {plan.pk}", highlight=False, soft_wrap=True
            )
        if watch:
            self.watch([plan], user, no_input=no_input, timeout=timeout)

    def approve(self, plan: Plan, user: User) -> Plan:
        try:
            return plan_approve(plan_id=plan.pk, user=user, channel=Channel.CLI)
        except (TransitionNotAllowed, AlreadyDecided, AlreadyVoted, VoteRefused) as error:
            raise CommandError(str(error), returncode=EXIT_FAILED) from None

    def reject(self, plan: Plan, user: User, reason: str, request_changes: bool) -> None:
        approval = Approval.objects.filter(plan=plan, kind=ApprovalKind.PLAN, status=ApprovalStatus.PENDING).first()
        if approval is None:
            raise CommandError(f"Plan {plan.pk} has no pending approval (it is {plan.status}).", returncode=EXIT_FAILED)
        if not can_decide(user, approval):
            raise CommandError(f"{user.get_username()} may not decide this plan's approval.", returncode=EXIT_FAILED)
        try:
            approval_decide(
                approval_id=approval.pk,
                decided_by=user,
                approve=False,
                reason=reason,
                request_changes=request_changes,
                channel=Channel.CLI,
            )
        except (AlreadyDecided, AlreadyVoted, VoteRefused, TransitionNotAllowed) as error:
            raise CommandError(f"Not decided: {error}", returncode=EXIT_FAILED) from None
        plan.refresh_from_db()
        if request_changes:
            self._say(f"Sent plan {plan.pk} back for changes to revision {plan.revision}: it stays a {plan.status}.")
        else:
            self._say(f"Rejected plan {plan.pk}: it is {plan.status}.")

    def revise(self, plan: Plan, user: User, path: Path, if_match: int | None) -> None:
        if not can_operate(user, plan):
            raise CommandError(
                f"Only the plan's owner may revise it, not {user.get_username()}.", returncode=EXIT_USAGE
            )
        data = self._read_json(path)
        before = plan.revision
        try:
            revised = plan_revise(
                plan_id=plan.pk, author=user, changes=data, expected_revisions=None if if_match is None else [if_match]
            )
        except PlanInvalid as error:
            details = f" Details: {json.dumps(error.details, ensure_ascii=False)}" if error.details else ""
            raise CommandError(
                printable(f"Invalid revision ({error.code}): {error.message}{details}"), returncode=EXIT_USAGE
            ) from None
        except (StaleRevision, TransitionNotAllowed) as error:
            raise CommandError(str(error), returncode=EXIT_FAILED) from None
        if revised.revision == before:
            self._say(f"Plan {plan.pk} is unchanged: still revision {before}.")
            return
        self._say(f"Revised plan {plan.pk}: revision {revised.revision}, waiting for approval again.")
        self.diff(revised, [])

    def diff(self, plan: Plan, numbers: list[int]) -> None:
        if len(numbers) > 2:
            raise CommandError("Give at most two revisions: REV_A [REV_B].", returncode=EXIT_USAGE)
        newer = numbers[1] if len(numbers) == 2 else plan.revision
        older = numbers[0] if numbers else newer - 1
        if older == 0 and not numbers:
            self._say(f"Plan {plan.pk} is at revision 1, as submitted: it has not been revised.")
            return
        found = dict(
            PlanRevision.objects.filter(plan=plan, revision__in=[older, newer]).values_list("revision", "content")
        )
        missing = [str(number) for number in (older, newer) if number not in found]
        if missing:
            raise CommandError(
                f"Plan {plan.pk} has no revision {', '.join(missing)} (it is at {plan.revision}).",
                returncode=EXIT_USAGE,
            )
        diff = content_diff(found[older], found[newer])
        self.console.print(diff_report(diff, found[older], found[newer], title=f"Revision {older} → {newer}"))

    def _say(self, line: str) -> None:
        self.console.print(line, highlight=False, soft_wrap=True, markup=False)

    def watch(self, plans: list[Plan], user: User, *, no_input: bool, timeout: float | None) -> None:
        watch = ui.Watch(
            plan_ids=[plan.pk for plan in plans],
            user=user,
            console=self.console,
            interactive=not no_input,
            stdin=self.stdin,
            timeout=timeout,
        )
        try:
            watch.run()
        except ui.WatchTimedOut as stop:
            self._final(plans)
            raise CommandError(str(stop), returncode=EXIT_TIMEOUT) from None
        except KeyboardInterrupt:
            raise CommandError("Stopped watching; the plans go on.", returncode=EXIT_INTERRUPTED) from None
        finals = self._final(plans)
        unfinished = [plan for plan in finals if plan.status != PlanStatus.COMPLETED]
        if unfinished:
            ended = ", ".join(f"{plan.pk} {plan.status}" for plan in unfinished)
            raise CommandError(f"Not completed: {ended}.", returncode=EXIT_FAILED)

    # --- input

    def _final(self, plans: list[Plan]) -> list[Plan]:
        finals = [Plan.objects.get(pk=plan.pk) for plan in plans]
        for plan in finals:
            self.console.print(ui.subtasks_table(plan))
        return finals

    def _read_json(self, path: Path) -> Any:
        try:
            text = (self.stdin or sys.stdin).read() if str(path) == "-" else path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"Cannot read {path}: {error}", returncode=EXIT_USAGE) from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise CommandError(
                f"{path} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno}).",
                returncode=EXIT_USAGE,
            ) from None

    def _user(self, name: str | None) -> User:
        users = User.objects
        if name:
            user = users.filter(username=name, is_active=True).first()
            if user is None:
                raise CommandError(f"No active user {name!r}.", returncode=EXIT_USAGE)
            return user
        user = users.filter(is_superuser=True, is_active=True).order_by("pk").first()
        if user is None:
            raise CommandError(
                "Pass --user NAME: there is no superuser to act as (make one with createsuperuser).",
                returncode=EXIT_USAGE,
            )
        return user

    def _plan(self, plan_id: str, user: User) -> Plan:
        try:
            pk = uuid.UUID(plan_id)
        except ValueError:
            raise CommandError(f"{plan_id!r} is not a plan id (a UUID).", returncode=EXIT_USAGE) from None
        plan = plans_visible_to(user).filter(pk=pk).first()
        if plan is None:
            raise CommandError(f"No plan {pk} that {user.get_username()} may see.", returncode=EXIT_USAGE)
        return plan
