"""Template tags of the execution app."""
