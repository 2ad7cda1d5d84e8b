"""The mutation run's bookkeeping (``tests/mutate.py``): an explanation of an equivalent mutant holds
only for the mutant it was written for, though mutmut hands its name to another one after an edit."""
from __future__ import annotations

from pathlib import Path

import mutate

RECORDS = '-    rows = frame.to_dict("records")\n+    rows = frame.to_dict("RECORDS")'
NONE = '-    rows = frame.to_dict("records")\n+    rows = None'


def test_a_pin_is_the_changed_lines_whatever_their_indent() -> None:
    assert mutate.pin(RECORDS) == mutate.pin(RECORDS.replace("    ", "\t")) != mutate.pin(NONE)
    assert len(mutate.pin(RECORDS)) == 8


def test_the_equivalents_file_gives_each_name_its_pin_and_why(tmp_path: Path) -> None:
    listing = tmp_path / "eq.txt"
    listing.write_text("a.b.x_f__mutmut_1@0123abcd  # the same test: scipy lower-cases it\n\n"
                       "a.b.x_f__mutmut_2  # not pinned\n")  # fmt: skip
    assert mutate.equivalents(listing) == {"a.b.x_f__mutmut_1": mutate.Explanation("0123abcd", "the same test: "
                                                                                   "scipy lower-cases it"),
                                           "a.b.x_f__mutmut_2": mutate.Explanation(None, "not pinned")}  # fmt: skip


def test_an_explanation_whose_name_now_names_another_mutant_or_none_is_stale() -> None:
    module = "harness/results/recommend.py"
    name = "harness.results.recommend.x_f__mutmut_"
    explained = {f"{name}1": mutate.Explanation(mutate.pin(RECORDS), "RECORDS is records"),
                 f"{name}2": mutate.Explanation(mutate.pin(RECORDS), "RECORDS is records"),
                 f"{name}3": mutate.Explanation(None, "never pinned"),
                 f"{name}4": mutate.Explanation(mutate.pin(RECORDS), "gone"),
                 "harness.measure.stats.x_g__mutmut_1": mutate.Explanation(None, "another module's")}  # fmt: skip
    found = {f"{name}1": "survived", f"{name}2": "killed", f"{name}3": "survived"}
    diffs = {f"{name}1": RECORDS, f"{name}2": NONE, f"{name}3": RECORDS}
    matched, stale = mutate.audit(module, found, explained, diffs)
    assert matched == {f"{name}1"}
    assert stale == [f"{name}2@{mutate.pin(RECORDS)}: now names {mutate.pin(NONE)}, killed: "
                     '-    rows = frame.to_dict("records") | +    rows = None',
                     f"{name}3@None: now names {mutate.pin(RECORDS)}, survived: " + RECORDS.replace("\n", " | "),
                     f"{name}4: no such mutant now"]  # fmt: skip


def test_every_explanation_on_file_is_pinned() -> None:
    """An unpinned one excuses whichever mutant holds its name, as six of the answer table's did after
    the control was added."""
    unpinned = [name for name, e in mutate.equivalents().items() if e.pin is None]
    assert unpinned == []
