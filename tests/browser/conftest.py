"""Browser tests skip on a machine without Chromium or Playwright; under CI (CI=true) they fail instead."""

import pytest

from tests.browser.support import in_ci, missing_requirement


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture: a missing browser must not first start workers and a live server.
    missing = missing_requirement()
    if missing and in_ci():
        pytest.fail(f"{missing}; CI=true, so the browser tests must run, not skip.", pytrace=False)
    if missing:
        pytest.skip(missing)
