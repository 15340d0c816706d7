"""Every case of the bad-input catalog (tools/bad_inputs.py) is refused with a message naming its file,
or skipped and counted by a filtering loader, and no input is changed."""

import pytest

from tools.bad_inputs import CASES, campaign, run_case


@pytest.mark.parametrize("case", CASES, ids=[f"{c.loader.rsplit('.', 1)[-1]}: {c.name}" for c in CASES])
def test_a_bad_input_is_refused_naming_its_file_or_counted(case):
    row = run_case(case)
    if case.filters:
        assert row["answer"] == "skipped and counted", row
        assert row["kept"] >= 2 and sum(row["skipped"].values()) >= 1, row  # the good items beside it are kept
    else:
        assert row["answer"] == "refused", row
        assert row["names_file"], row
    assert row["input_unchanged"] and not row["code_ran"], row


def test_the_catalog_covers_every_loader_and_counts_hostile_files():
    s = campaign()["summary"]
    assert s["loaders"] >= 14 and s["hostile_tried"] >= 6
    assert s["hostile_refused"] == s["hostile_tried"] and s["crashed"] == 0 and s["code_ran"] == 0
