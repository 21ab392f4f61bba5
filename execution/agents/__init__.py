"""Agents: what runs a subtask. See base.py for the contract and registry.py for the names."""
