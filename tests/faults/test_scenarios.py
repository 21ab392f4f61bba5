"""Each fault scenario (a module of scenarios/) passes in the fault session, on servers of its own.

One session runs every selected scenario (starting servers, workers and web once);
each test here reports one module's results from that session's JUnit report.
"""

import json
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.launch import ROOT, SCENARIOS, run_session

# Processes of its own (a fault session starts servers, workers and web of its own): not in make test-fast.
pytestmark = pytest.mark.processes

ARTIFACTS = ROOT / "artifacts"
MODULES = sorted(path.stem for path in SCENARIOS.glob("test_*.py"))
# The whole fault session runs inside the first test selected: its budget is the session's.
SESSION_TIMEOUT_S = 900


@dataclass(frozen=True)
class Case:
    module: str
    name: str
    problem: str  # empty when it passed
    seconds: float


@dataclass(frozen=True)
class SessionReport:
    status: int
    cases: list[Case]
    output: Path
    figures: list[dict]

    def of(self, module: str) -> list[Case]:
        return [case for case in self.cases if case.module == module]

    def tail(self, lines: int = 150) -> str:
        return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])


def _cases(junit: Path) -> list[Case]:
    if not junit.exists():
        return []
    cases = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        problems = [child for child in case if child.tag in ("failure", "error", "skipped")]
        text = "\n".join(f"{child.tag}: {child.get('message', '')}\n{child.text or ''}" for child in problems)
        module = case.get("classname", "").rsplit(".", 1)[-1]
        seconds = float(case.get("time", 0))
        cases.append(Case(module=module, name=case.get("name", ""), problem=text, seconds=seconds))
    return cases


@pytest.fixture(scope="module")
def fault_session(request, tmp_path_factory) -> SessionReport:
    selected = {item.callspec.params["module"] for item in request.session.items if item.module is request.module}
    folder = tmp_path_factory.mktemp("fault-session")
    junit, output = folder / "junit.xml", folder / "output.txt"
    paths = [str((SCENARIOS / f"{module}.py").relative_to(ROOT)) for module in sorted(selected)]
    run = run_session([*paths, "-q", "-s", "--junitxml", str(junit)], output=output)
    report = SessionReport(status=run.status, cases=_cases(junit), output=output, figures=run.figures)
    # The figures of the last run, for the table of docs/reliability.md.
    seconds = {case.name: case.seconds for case in report.cases}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fault-figures.json").write_text(json.dumps({"seconds": seconds, "figures": run.figures}, indent=1))
    for figures in run.figures:
        print(figures)
    return report


@pytest.mark.slow
@pytest.mark.timeout(SESSION_TIMEOUT_S)
@pytest.mark.parametrize("module", MODULES)
def test_scenario_passes_on_servers_of_its_own(module, fault_session):
    cases = fault_session.of(module)
    status = fault_session.status
    assert cases, f"the fault session ran nothing of {module} (exit status {status}):\n{fault_session.tail()}"
    failed = [case for case in cases if case.problem]
    assert not failed, "\n\n".join(f"{case.name}\n{case.problem}" for case in failed) + "\n\n" + fault_session.tail()
