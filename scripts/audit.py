"""Check the pinned requirements against an advisory database (pip-audit with OSV), or say why it cannot.

`make lint` runs this. When the advisory database answers, every pin of requirements.txt
and requirements-dev.txt is looked up and a known vulnerability fails the check (exit 1,
pip-audit naming the package, the advisory and the fixed versions). When it cannot be
reached at all (no network, a registry-only proxy), the check is skipped with a line
saying so, and lint goes on: a missing network is not a finding. PIP_AUDIT_OSV_URL names
another OSV-compatible database (a mirror), as for pip-audit itself.
"""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ("requirements.txt", "requirements-dev.txt")
OSV_URL = "https://api.osv.dev/v1/query"
PROBE_TIMEOUT_S = 10


def unreachable(url: str) -> str:
    """Return why the advisory database at `url` cannot be asked, or "" when it answers."""
    probe = json.dumps({"package": {"name": "pip", "ecosystem": "PyPI"}, "version": "0"}).encode()
    request = urllib.request.Request(url, data=probe, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):  # nosec B310
            return ""
    except urllib.error.HTTPError as error:
        # It answered: a refusal of the probe is pip-audit's to report, an outage is not a finding.
        return f"it answers {error.code}" if error.code >= 500 else ""
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))


def main() -> int:
    url = os.environ.get("PIP_AUDIT_OSV_URL") or OSV_URL
    problem = unreachable(url)
    if problem:
        print(f"audit: skipped: the advisory database at {url} cannot be reached ({problem}).")
        return 0
    command = [sys.executable, "-m", "pip_audit", "--vulnerability-service", "osv", "--osv-url", url]
    command += ["--no-deps", "--disable-pip", "--strict", "--progress-spinner", "off"]
    for name in REQUIREMENTS:
        command += ["--requirement", str(ROOT / name)]
    return subprocess.run(command, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
