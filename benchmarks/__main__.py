"""Run every benchmark (`make bench`): figures and ratios measured side by side in one run."""

import os
import platform
import sys

from django.core.management import call_command

from benchmarks import canvas_shapes, event_stream, plan_validation, result_backend

BENCHMARKS = {
    "validation": plan_validation.run,
    "result_backend": result_backend.run,
    "canvas": canvas_shapes.run,
    "stream": event_stream.run,
}


def main(names: list[str]) -> None:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load}, Python {platform.python_version()}")
    call_command("migrate", verbosity=0)
    for name in names or BENCHMARKS:
        BENCHMARKS[name]()
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
