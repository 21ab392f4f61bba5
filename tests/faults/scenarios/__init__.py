"""The fault scenarios, run by `python -m tests.faults` in a session whose servers they may stop and restart."""
