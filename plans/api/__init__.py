"""REST API for plans (under /api/v1/plans/)."""
