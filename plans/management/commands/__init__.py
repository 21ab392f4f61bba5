"""Management commands of the plans app."""
