"""The bad-input catalogue, second half: sweep settings and stores (the rows: tests/helpers/catalogue.py)."""

import pytest

from tests.helpers.catalogue import SETTINGS, run_row

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("what, args, message", SETTINGS, ids=[row[0] for row in SETTINGS])
def test_bad_setting(tmp_path, what, args, message):
    run_row(tmp_path, what, args, message)
