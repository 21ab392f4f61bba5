"""Approval endpoints: the queue of decisions, approve and reject."""
