"""The command-line door: `manage.py plans` and its terminal screens."""
