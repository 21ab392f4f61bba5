"""The admin desk door: plans, approvals and execution records in the Django admin."""
