"""Check docker-compose.yml against the Compose Specification's JSON schema, without a Docker engine.

python scripts/check_compose.py [file ...]     # what `make compose-check` and `make lint` run

scripts/compose-spec.json is the schema `docker compose` itself validates with, copied from
github.com/compose-spec/compose-spec (schema/compose-spec.json, commit 170098ba, Apache-2.0).
"""

import json
import sys
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).resolve().parent / "compose-spec.json"


def problems(path: Path) -> list[str]:
    """Return where the file breaks the schema, one line each."""
    document = yaml.safe_load(path.read_text())
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [
        f"{path.name}: {'/'.join(str(part) for part in error.absolute_path) or '(top)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda error: list(error.absolute_path))
    ]


def main(paths: list[str]) -> int:
    found = [line for path in (paths or [str(ROOT / "docker-compose.yml")]) for line in problems(Path(path))]
    print("\n".join(found) if found else "docker-compose.yml follows the Compose Specification.")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
