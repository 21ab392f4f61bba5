"""The contract on file: openapi.yaml is the schema the service serves, and one version is reported everywhere."""

import re
import tomllib

import pytest
import yaml
from rest_framework.test import APIClient

from scripts.processes import ROOT

pytestmark = pytest.mark.django_db


def differences(committed: object, served: object, where: str = "") -> list[str]:
    """Return where two parsed schemas differ (the first few places), as paths."""
    if isinstance(committed, dict) and isinstance(served, dict):
        found = [
            f"{where}/{key}: only in {'openapi.yaml' if key in committed else 'the code'}"
            for key in committed.keys() ^ served.keys()
        ]
        for key in committed.keys() & served.keys():
            found += differences(committed[key], served[key], f"{where}/{key}")
        return found
    return [] if committed == served else [f"{where}: differs"]


def test_the_committed_openapi_yaml_is_the_schema_the_service_serves():
    response = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi")
    assert response.status_code == 200
    served = yaml.safe_load(response.content)
    committed = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    found = differences(committed, served)
    assert not found, "openapi.yaml is out of date: run `make openapi` and commit it.\n" + "\n".join(sorted(found)[:20])


def test_pyproject_the_api_health_and_the_changelog_report_one_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert yaml.safe_load((ROOT / "openapi.yaml").read_text())["info"]["version"] == version
    assert APIClient().get("/health/").json()["version"] == version
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    assert released[0] == version


def test_the_license_is_apache_2():
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert "Version 2.0, January 2004" in (ROOT / "LICENSE").read_text()
