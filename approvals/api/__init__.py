"""REST API for approvals (under /api/v1/approvals/)."""
