"""REST API for agents, health and the event stream."""
