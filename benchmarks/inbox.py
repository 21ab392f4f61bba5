"""`inbox`: the lists of pending approvals with 100,000 decided and 10,000 pending, against 100 pending.

The rows are written straight into the database (INSERT ... SELECT, not through the engine):
plans of one subtask each, owned by one user; the decided approvals, each with its
approving vote; the pending ones, one in two naming a group as its approvers (so each list fills a page
at 100 pending too). Then, in
this process through Django's test client, the median latency and the query count of
`GET /api/v1/approvals/?status=pending` and `?awaiting=me` (for a decider and for a
member of the named group) and of the admin's approvals queue (pending ones), with 100
pending approvals and with 10,000 (9,900 of them cancelled, then pending again, in turn).
"""

import statistics
import time
import uuid
from collections.abc import Callable

from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from approvals.models import Approval, Vote
from benchmarks.bench import Bench, scenario_result
from benchmarks.report import Result
from plans.models import Plan, PlanStatus, Subtask, SubtaskStatus

DECIDED, PENDING, FEW_PENDING = 100_000, 10_000, 100
PLANS = 1_000
# Reads of each endpoint at each size: ROUNDS rounds of READS_PER_ROUND, the sizes alternating.
ROUNDS, READS_PER_ROUND = 5, 4
GROUP = "bench-inbox-reviewers"
TOOL, EXTRA_TOOL = "bench.inbox", "bench.inbox-extra"
ENDPOINTS = {
    "api_pending": ("decider", "/api/v1/approvals/?status=pending"),
    "api_awaiting_decider": ("decider", "/api/v1/approvals/?awaiting=me"),
    "api_awaiting_group": ("reviewer", "/api/v1/approvals/?awaiting=me"),
    "admin_queue": ("decider", "/admin/approvals/approval/?status__exact=pending"),
}

INSERT_APPROVALS = """
INSERT INTO approvals_approval (
    id, plan_id, subtask_id, kind, tool, arguments, call_index, status, requested_at, expires_at,
    decided_by_id, decided_at, reason, edited_arguments, result, policy, approvers, quorum,
    separate_requester, on_expiry, channel
)
SELECT gen_random_uuid(), (%(plans)s::uuid[])[1 + n %% %(width)s], (%(subtasks)s::uuid[])[1 + n %% %(width)s],
       'tool_call', %(tool)s, '{"path": "notes.txt"}'::jsonb, n, %(status)s,
       now() - make_interval(secs => %(offset)s + n), NULL,
       CASE WHEN %(decided)s THEN %(user)s END, CASE WHEN %(decided)s THEN now() END, '', NULL,
       CASE WHEN %(decided)s THEN '"ok"'::jsonb END, NULL,
       CASE WHEN n %% 2 = 0 THEN %(approvers)s::jsonb END, 1, false, 'reject',
       CASE WHEN %(decided)s THEN 'api' ELSE '' END
FROM generate_series(1, %(count)s) AS n
"""  # nosec: B608, the parameters are bound

INSERT_VOTES = """
INSERT INTO approvals_vote (approval_id, user_id, decision, reason, channel, at)
SELECT id, decided_by_id, 'approve', '', 'api', decided_at FROM approvals_approval
WHERE status = 'approved' AND plan_id = ANY(%(plans)s::uuid[])
"""


class Rows:
    """The scenario's users, plans and approvals, written and removed in bulk."""

    def __init__(self, plans: int) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.owner = User.objects.create_user(f"bench-inbox-owner-{suffix}")
        self.decider = User.objects.create_user(f"bench-inbox-decider-{suffix}", is_staff=True)
        self.decider.user_permissions.add(
            Permission.objects.get(codename="decide_approval", content_type__app_label="approvals")
        )
        self.reviewer = User.objects.create_user(f"bench-inbox-reviewer-{suffix}")
        group, _ = Group.objects.get_or_create(name=GROUP)
        group.user_set.add(self.reviewer)
        made = Plan.objects.bulk_create(
            Plan(goal=f"benchmark: inbox {index}", owner=self.owner, status=PlanStatus.COMPLETED)
            for index in range(plans)
        )
        self.plan_ids = [plan.pk for plan in made]
        subtasks = Subtask.objects.bulk_create(
            Subtask(
                plan_id=plan_id,
                key="ask",
                description="asks for a tool call",
                agent="script",
                status=SubtaskStatus.DONE,
                position=0,
                batch_index=0,
            )
            for plan_id in self.plan_ids
        )
        self.subtask_ids = [subtask.pk for subtask in subtasks]

    def add_approvals(self, count: int, *, status: str, tool: str = TOOL, offset: int = 0) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                INSERT_APPROVALS,
                {
                    "plans": [str(pk) for pk in self.plan_ids],
                    "subtasks": [str(pk) for pk in self.subtask_ids],
                    "width": len(self.plan_ids),
                    "tool": tool,
                    "status": status,
                    "offset": offset,
                    "decided": status != "pending",
                    "user": self.owner.pk,
                    "approvers": f'["group:{GROUP}"]',
                    "count": count,
                },
            )
            if status == "approved":
                cursor.execute(INSERT_VOTES, {"plans": [str(pk) for pk in self.plan_ids]})
        analyze()

    def set_status(self, tool: str, status: str) -> None:
        """Set the status of the approvals of this tool, then vacuum, as a database that has run a while would be."""
        Approval.objects.filter(plan_id__in=self.plan_ids, tool=tool).update(status=status)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE approvals_approval")

    def clients(self) -> dict[str, Client]:
        clients = {}
        for who in ("decider", "reviewer"):
            client = Client(HTTP_HOST="127.0.0.1")
            client.force_login(getattr(self, who))
            clients[who] = client
        return clients

    def remove(self) -> None:
        approvals = Approval.objects.filter(plan_id__in=self.plan_ids)
        Vote.objects.filter(approval__in=approvals)._raw_delete(connection.alias)  # type: ignore[attr-defined]
        approvals._raw_delete(connection.alias)  # type: ignore[attr-defined]
        Subtask.objects.filter(plan_id__in=self.plan_ids)._raw_delete(connection.alias)  # type: ignore[attr-defined]
        Plan.objects.filter(pk__in=self.plan_ids)._raw_delete(connection.alias)  # type: ignore[attr-defined]
        User.objects.filter(pk__in=[self.owner.pk, self.decider.pk, self.reviewer.pk]).delete()
        Group.objects.filter(name=GROUP).delete()
        analyze()


def analyze() -> None:
    """Refresh the planner's statistics, as autovacuum does on a database that has been running a while."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE approvals_approval, approvals_vote, plans_plan, plans_subtask")


def timed_get(client: Client, path: str) -> Callable[[], float]:
    def get() -> float:
        began = time.perf_counter()
        response = client.get(path)
        elapsed = time.perf_counter() - began
        assert response.status_code == 200, (path, response.status_code, response.content[:300])
        return elapsed

    return get


def query_count(get: Callable[[], float]) -> int:
    with CaptureQueriesContext(connection) as captured:
        get()
    return len(captured.captured_queries)  # now: the next request clears the connection's log


def one_rep(rows: Rows, result: Result) -> dict[str, str]:
    """Read every endpoint at both sizes, in ROUNDS alternating rounds so the machine's other work weighs on both alike.

    Between rounds the extra approvals are made pending (10,000 in all) or cancelled (100 pending).
    """
    clients = rows.clients()
    timings: dict[tuple[str, str], list[float]] = {}
    for round_index in range(ROUNDS):
        for label, status in (("small", "cancelled"), ("large", "pending")):
            rows.set_status(EXTRA_TOOL, status)
            for name, (who, path) in ENDPOINTS.items():
                get = timed_get(clients[who], path)
                if round_index == 0:
                    get()  # warm-up
                    result.fact(f"{name}_{label}_queries", query_count(get))
                timings.setdefault((name, label), []).extend(get() for _ in range(READS_PER_ROUND))
    shown, ratios = {}, []
    for name in ENDPOINTS:
        small, large = (statistics.median(timings[name, label]) * 1000 for label in ("small", "large"))
        result.add(f"{name}_small_ms", small, "ms")
        result.add(f"{name}_large_ms", large, "ms")
        result.add(f"{name}_ratio", large / small, "x")
        ratios.append(large / small)
        shown[name] = (
            f"{small:.1f} -> {large:.1f} ms ({large / small:.2f}x), "
            f"{result.facts[f'{name}_small_queries']} -> {result.facts[f'{name}_large_queries']} queries"
        )
    result.add("ratio", max(ratios), "x")
    return shown


def run(bench: Bench) -> Result:
    decided, pending = bench.scaled(DECIDED), bench.scaled(PENDING)
    few = min(FEW_PENDING, pending)
    result = scenario_result(
        "inbox", f"{decided} decided approvals, {pending} pending against {few}: API lists and the admin's queue"
    )
    began = time.perf_counter()
    rows = Rows(bench.scaled(PLANS, 10))
    try:
        rows.add_approvals(decided, status="approved", offset=10 * pending)
        rows.add_approvals(few, status="pending")
        rows.add_approvals(pending - few, status="pending", tool=EXTRA_TOOL, offset=few)
        print(f"  {decided} decided and {pending} pending written in {time.perf_counter() - began:.1f} s", flush=True)
        for rep in range(bench.repeat):
            shown = one_rep(rows, result)
            print(f"  rep {rep + 1}: {few} -> {pending} pending:", flush=True)
            for name, text in shown.items():
                print(f"    {name}: {text}", flush=True)
    finally:
        rows.remove()
    same = all(result.facts[f"{name}_small_queries"] == result.facts[f"{name}_large_queries"] for name in ENDPOINTS)
    result.fact("same_query_counts", same)
    result.fact("decided", decided)
    result.fact("pending", pending)
    result.fact("few_pending", few)
    return result
