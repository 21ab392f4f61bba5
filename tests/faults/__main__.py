"""`python -m tests.faults [pytest options]`: the fault scenarios on servers of their own (see launch.py)."""

import sys

from tests.faults.launch import main

sys.exit(main())
