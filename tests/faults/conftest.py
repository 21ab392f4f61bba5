"""Outside a fault session, collect only the launcher (test_scenarios.py): the scenarios need servers of their own."""

from tests.faults.launch import FaultStack

collect_ignore = [] if FaultStack.from_environment() else ["scenarios"]
