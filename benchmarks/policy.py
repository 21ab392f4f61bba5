"""`policy`: what a file of 200 approval rules costs: matching one approval against it, and the
`resume` and `parked` figures with it loaded against the same scenarios without it, in one run.

No rule fits the benchmark's approvals, so each one is checked against all 200 (the worst case).
"""

import json
import random
import statistics
import time
from pathlib import Path

from approvals.rules import Rule, Subject, rule_match, rules_parse
from benchmarks import parked, resume
from benchmarks.bench import Bench, scenario_result
from benchmarks.report import Result

RULES = 200
SUBJECTS = 2000


def rules_data(count: int = RULES) -> dict:
    """Return `count` rules of every shape (kind, agent, tool and argument globs, groups), none fitting here."""
    rules = []
    for index in range(count):
        match: dict = {"kind": "tool_call"}
        shape = index % 4
        if shape == 0:
            match["tool"] = f"deploy-{index}-*"
        elif shape == 1:
            match.update(tool="shell*", arguments={"cmd": f"rm -rf /srv/{index}/*"})
        elif shape == 2:
            match.update(agent=f"team-{index}-?", tool="*")
        else:
            match.update(requester_group=f"group-{index}", arguments={"path": f"/etc/{index}/*", "mode": "w*"})
        decision = ("deny", "ask", "allow")[index % 3]
        rule: dict = {"name": f"rule-{index}", "match": match, "decision": decision}
        if decision == "ask":
            rule["quorum"] = 2
        rules.append(rule)
    return {"rules": rules}


def subjects(count: int, seed: int = 3) -> list[Subject]:
    rng = random.Random(seed)
    tools = ["bench.tool", "shell", "write_file", "read_file", "fs__write_file"]
    return [
        Subject(
            kind="tool_call",
            agents=(rng.choice(["script", "python", "llm", "team-1"]),),
            tool=rng.choice(tools),
            arguments={"cmd": f"ls /srv/{rng.randint(0, 999)}", "path": f"/tmp/{rng.randint(0, 999)}", "mode": "r"},
            groups=frozenset({"staff"}),
        )
        for _ in range(count)
    ]


def match_ms(rules: list[Rule], cases: list[Subject]) -> tuple[float, float]:
    """Return the median and the 99th percentile of one approval's matching, in milliseconds of CPU."""
    times = []
    for subject in cases:
        began = time.process_time_ns()
        assert rule_match(rules, subject) is None
        times.append((time.process_time_ns() - began) / 1e6)
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def run(bench: Bench) -> Result:
    result = scenario_result("policy", f"a file of {RULES} rules: matching, and resume and parked with it loaded")
    data = rules_data()
    path = Path(bench.log_dir) / "policy-200.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    rules = rules_parse(data)
    cases = subjects(SUBJECTS)
    for _ in range(bench.repeat):
        p50, p99 = match_ms(rules, cases)
        result.add("match_p50_ms", p50, "ms")
        result.add("match_p99_ms", p99, "ms")
    print(f"  matching {RULES} rules: p50 {result.figures['match_p50_ms'].median:.3f} ms of CPU", flush=True)

    figures: dict[str, dict[str, float]] = {}
    for label, env in (("without", {}), ("with", {"APPROVALS_POLICY_FILE": str(path)})):
        with bench.shared_env(env):
            print(f"  resume and parked {label} the rules:", flush=True)
            resumed = resume.run(bench)
            held = parked.run(bench)
        figures[label] = {
            "resume_p50_ms": resumed.figures["engine_p50_ms"].median,
            "approve_request_p50_ms": resumed.figures["approve_request_p50_ms"].median,
            "parked_engine_s": held.figures["engine_s"].median,
        }
    for key in figures["with"]:
        result.fact(f"without_{key}", round(figures["without"][key], 3))
        result.fact(f"with_{key}", round(figures["with"][key], 3))
    result.add("resume_with_over_without", figures["with"]["resume_p50_ms"] / figures["without"]["resume_p50_ms"], "x")
    result.add(
        "approve_with_over_without",
        figures["with"]["approve_request_p50_ms"] / figures["without"]["approve_request_p50_ms"],
        "x",
    )
    result.add(
        "parked_with_over_without", figures["with"]["parked_engine_s"] / figures["without"]["parked_engine_s"], "x"
    )
    result.fact("rules", RULES)
    return result
