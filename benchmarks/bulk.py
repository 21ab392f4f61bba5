"""`bulk`: many parked tool calls decided in one request, `POST /api/v1/approvals/decide/`.

1,000 plans each wait on a tool-call approval (the plan of `parked`); then one request
approves all of them. The figures: the request's time, from sending it to its answer (and
per 1,000 decisions), and the time from sending it until every plan has completed.
"""

import time

from benchmarks.bench import Bench, scenario_result
from benchmarks.client import Api, in_threads, wait_finished
from benchmarks.parked import PLAN, THREADS, wait_pending
from benchmarks.report import Result

PLANS = 1000


def run(bench: Bench) -> Result:
    count = bench.scaled(PLANS, 2)
    result = scenario_result("bulk", f"{count} parked tool calls approved in one POST /approvals/decide/")
    for rep in range(bench.repeat):
        bench.stack.settle()
        plan_ids = in_threads(bench.api, [PLAN] * count, Api.submit, threads=THREADS)
        approval_ids = wait_pending(plan_ids)
        bench.stack.settle()
        body = {"decisions": [{"id": pk, "decision": "approve", "result": "ok"} for pk in approval_ids]}

        start = time.time()
        began = time.perf_counter()
        answer = bench.api.request("POST", "/approvals/decide/", json=body).json()
        request_s = time.perf_counter() - began
        refused = [item for item in answer["results"] if item["status"] != "approved"]
        if refused:
            raise RuntimeError(f"{len(refused)} of {count} decisions were not approved, e.g. {refused[0]}")
        engine = wait_finished(plan_ids) - start
        bench.stack.settle()

        result.add("request_s", request_s, "s")
        result.add("seconds_per_1000", request_s / count * 1000, "s")
        result.add("decisions_per_s", count / request_s, "/s")
        result.add("completed_s", engine, "s")
        print(
            f"  rep {rep + 1}: {count} decisions in one request: answered in {request_s:.2f} s "
            f"({request_s / count * 1000:.2f} s per 1,000), every plan completed {engine:.2f} s after sending it",
            flush=True,
        )
    result.fact("plans", count)
    return result
