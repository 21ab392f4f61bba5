"""Benchmarks: `make bench` prints figures measured side by side in one run.

Importing the package sets Django up, so each module also runs on its own
(`python -m benchmarks.result_backend` measures one backend in a process of its own).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
