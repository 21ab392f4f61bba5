"""Management commands of the command-line door."""
