"""Stand-ins for the services the project talks to, run as real processes in tests."""
