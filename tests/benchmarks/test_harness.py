"""The benchmark harness end to end at a tiny scale: every scenario runs and writes its JSON figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Processes of its own (the harness starts a stack of its own): not in make test-fast.
pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parents[2]
# What the issue asks each scenario's JSON object to hold, beside medians, spread and samples.
REQUIRED = {
    "validation": {"ratio"},
    "overhead": {"engine_s", "raw_s", "raw_in_app_s", "ratio"},
    "resume": {
        "engine_p50_ms",
        "engine_p99_ms",
        "raw_dispatch_p50_ms",
        "ratio",
        "approve_request_p50_ms",
        "trivial_get_p50_ms",
    },
    "uneven": {"engine_s", "raw_s", "critical_path_s", "work_s", "lower_bound_s", "barrier_cost_s"},
    "large_plan": {
        "large_create_s",
        "large_create_web_peak_rss_mb",
        "small_per_subtask_ms",
        "large_per_subtask_ms",
        "per_subtask_ratio",
        "small_status_queries",
        "large_status_queries",
        "small_detail_queries",
        "large_detail_queries",
        "detail_ratio",
    },
    "parked": {
        "busy_slots",
        "subtasks_worker_rss_before_mb",
        "subtasks_worker_rss_after_mb",
        "engine_s",
        "raw_s",
        "decisions_ratio",
        "cpu_ms_per_decision_web",
        "cpu_ms_per_decision_subtasks",
        "cpu_ms_per_decision_control",
        "cpu_ms_per_decision_postgres",
        "cpu_ms_per_decision_redis",
        "cpu_ms_per_decision_clients",
    },
    "bulk": {"request_s", "seconds_per_1000", "completed_s"},
    "inbox": {
        "ratio",
        "api_pending_small_queries",
        "api_pending_large_queries",
        "api_awaiting_decider_small_queries",
        "api_awaiting_decider_large_queries",
        "api_awaiting_group_small_queries",
        "api_awaiting_group_large_queries",
        "admin_queue_small_queries",
        "admin_queue_large_queries",
        "same_query_counts",
    },
    "scaling": {"engine_1p_per_s", "engine_2p_per_s", "engine_4p_per_s", "speedup_2p", "speedup_4p"},
    "hosts": {"one_host_per_s", "two_hosts_per_s", "speedup", "invariants_ok"},
    "many_plans": {"engine_subtasks_per_s", "raw_tasks_per_s", "ratio"},
    "canvas": {"per_batch_s", "nested_s", "ratio"},
    "stream": {"p50_ms", "p95_ms"},
    "sse": {
        "p50_ms",
        "p99_ms",
        "web_db_connections",
        "web_processes",
        "web_rss_before_mb",
        "web_rss_streams_mb",
    },
    "health": {"ready_p50_ms", "approve_p50_ms", "approve_with_health_burst_p50_ms", "burst_over_alone"},
    "mcp": {"direct_stdio_p50_ms", "direct_http_p50_ms", "worker_stdio_p50_ms", "worker_http_p50_ms", "stdio_ratio"},
    "model_stream": {"delta_p50_ms", "delta_p99_ms", "streamed_s", "plain_s", "overhead"},
    "revise": {"revise_over_create"},
    "result_backend": {"django_db_s", "redis_s", "ratio"},
    "policy": {"match_p50_ms", "resume_with_over_without", "parked_with_over_without"},
    "as_documented": {"engine_s", "raw_s", "ratio", "resume_p50_ms", "raw_dispatch_p50_ms", "resume_ratio"},
}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_scenario_runs_on_throwaway_servers_and_writes_its_figures(tmp_path):
    output = tmp_path / "latest.json"
    # Throwaway servers of its own, as `make bench` starts when no URL is set: the harness
    # purges queues and the suite's workers must not take its tasks.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_", "CELERY_"))}
    env.update(BENCH_SCALE="0.01", BENCH_REPEAT="1", BENCH_OUTPUT=str(output))
    done = subprocess.run(
        [sys.executable, "scripts/devstack.py", "exec", "--", sys.executable, "-m", "benchmarks"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-6000:]}"

    figures = json.loads(output.read_text())
    assert {"date", "machine", "load_before", "load_after", "scenarios"} <= figures.keys()
    assert figures["scenarios"].keys() == REQUIRED.keys()
    for name, keys in REQUIRED.items():
        scenario = figures["scenarios"][name]
        assert keys <= scenario.keys(), (name, keys - scenario.keys())
        assert {"spread", "samples", "reconciler", "load"} <= scenario.keys(), name
        assert {"resent_events", "log_lines"} <= scenario["reconciler"].keys(), name
        for key in scenario["samples"]:
            assert len(scenario["samples"][key]) == 1, (name, key)
    assert figures["scenarios"]["parked"]["busy_slots"] == 0
    assert figures["scenarios"]["parked"]["cpu_ms_per_decision_web"] > 0  # the decisions' requests were counted
    assert figures["scenarios"]["hosts"]["invariants_ok"] is True
    assert figures["scenarios"]["inbox"]["same_query_counts"] is True
    assert "median" in done.stdout  # the table
