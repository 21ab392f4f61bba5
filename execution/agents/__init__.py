"""Agents: what runs a subtask. base.py is the contract, registry.py the names, definitions.py the agents file."""
