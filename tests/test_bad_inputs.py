"""The bad-input catalogue, first half: data files and values (the rows: tests/helpers/catalogue.py)."""

import pytest

from tests.helpers.catalogue import CATALOGUE, INPUTS, run_row
from tests.helpers.cli import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("what, args, message", INPUTS, ids=[row[0] for row in INPUTS])
def test_bad_input(tmp_path, what, args, message):
    run_row(tmp_path, what, args, message)


def test_readme_lists_every_row():
    readme = (ROOT / "README.md").read_text()
    missing = [what for what, _, _ in CATALOGUE if f"| {what} |" not in readme]
    assert not missing, f"README's bad-input table lacks: {missing}"
    assert len(CATALOGUE) >= 60
