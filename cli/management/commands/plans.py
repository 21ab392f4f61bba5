"""`manage.py plans`: submit, inspect, approve and watch plans from a terminal."""

import json
import sys
import uuid
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.text import Text

from approvals.services import plan_approve
from cli import console as ui
from common.text import printable
from execution.services import plan_submit
from execution.transitions import TransitionNotAllowed
from plans.models import Plan, PlanStatus
from plans.selectors import plans_visible_to
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
            return plan_approve(plan_id=plan.pk, user=user)
        except TransitionNotAllowed as error:
            raise CommandError(str(error), returncode=EXIT_FAILED) from None

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
