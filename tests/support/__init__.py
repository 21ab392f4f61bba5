"""Helpers the tests share: test data, API callers, agents only tests register, the worker cluster, invariants."""
