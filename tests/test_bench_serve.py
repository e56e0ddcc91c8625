"""``bench/serve.py``: the latency percentile it reports."""
from __future__ import annotations

import math

from bench_scripts import load_bench

bench = load_bench("serve")


def test_percentile_is_the_nearest_rank():
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert bench.percentile(values, 95) == 19.0  # rank ceil(0.95 * 20) = 19
    assert bench.percentile(values, 50) == 10.0
    assert bench.percentile([3.0, 1.0, 2.0], 100) == 3.0
    assert bench.percentile([4.0], 5) == 4.0
    assert math.isnan(bench.percentile([], 95))


def test_drain_time_is_when_the_line_in_front_had_finished():
    """A 503 at t=1.0 saw 3 completed and 4 in line (waiting + running): the line has drained
    once 7 are completed, at t=4.0, whatever arrived after it."""
    log = bench.HealthLog("http://unused")
    log.readings = [(0.0, 0, 2), (1.0, 3, 4), (2.0, 5, 6), (3.0, 6, 5), (4.0, 7, 9), (5.0, 9, 7)]
    assert log.drained_at(1.5) == 4.0
    assert log.drained_at(0.5) == 1.0  # 0 + 2 in line: drained at the first reading with 2 or more completed
    assert log.drained_at(-1.0) is None  # no reading before the refusal
    assert log.drained_at(4.5) is None  # its line had not drained when polling stopped


def test_long_question_has_the_asked_length_and_ends_with_the_question(generator):
    paragraphs = ["Jaws is a 1975 American thriller film directed by Steven Spielberg."] * 200
    text = bench.long_question(generator, paragraphs, "Who directed Jaws?", 500)
    assert abs(len(generator.encode(text)) - 500) <= 3  # decode/encode may merge a token at the seams
    assert text.endswith("Who directed Jaws?")


def test_long_cases_resume_from_their_checkpoint_rows(demo_pipeline):
    """A measured case is handed to ``record`` (the checkpoint); given back as done, it is not
    measured again but its row comes back in its place."""
    paragraphs = ["Jaws is a 1975 American thriller film directed by Steven Spielberg."] * 50
    recorded: list[dict] = []
    first = bench.run_long(demo_pipeline("wo-rag"), ["wo-rag"], [120], "Who directed Jaws?", paragraphs, 2,
                           record=recorded.append)
    assert [bench.case_key(r) for r in recorded] == [("wo-rag", 120, 2)] and first == recorded
    assert recorded[0]["peak_growth_mb"] >= 0 and "error" not in recorded[0]
    again: list[dict] = []
    done = {bench.case_key(r): {**r, "resumed": True} for r in recorded}
    second = bench.run_long(demo_pipeline("wo-rag"), ["wo-rag"], [120], "Who directed Jaws?", paragraphs, 2,
                            done=done, record=again.append)
    assert again == [] and second == [{**recorded[0], "resumed": True}]
    other_budget = bench.run_long(demo_pipeline("wo-rag"), ["wo-rag"], [120], "Who directed Jaws?", paragraphs, 3,
                                  done=done, record=again.append)
    assert [bench.case_key(r) for r in again] == [("wo-rag", 120, 3)] and other_budget == again
