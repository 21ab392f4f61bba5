"""`manage.py plans`."""
