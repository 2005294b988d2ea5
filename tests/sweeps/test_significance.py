"""Paired bootstrap by input id (``prefixlab.sweeps.significance``) on small synthetic predictions files."""

import json
import random

import pytest

from prefixlab.sweeps.significance import (SignificanceError, align, contrast, corpus_value, interval, paired_difference,
                                           read_predictions, run_spread, seed_spread)
from prefixlab.tasks.scoring.mteval import bleu, mteval_statistics
from prefixlab.tasks.scoring.text import classification, rouge

REFERENCES = [(f"the {c} cafe serves {f} food near the river .", f"{c} cafe has {f} food .") for c, f in
              [(c, f) for c in ("red", "blue", "green", "small", "old", "new") for f in ("thai", "french", "english", "fast food")]]
GOOD = [refs[0] for refs in REFERENCES]                                  # the first reference itself
BAD = [f"a place {i} . nothing here matches" for i in range(len(REFERENCES))]


def write_run(path, predictions, references=REFERENCES, ids=None, shuffle=None):
    ids = ids or [f"e2e-{i:03d}" for i in range(len(predictions))]
    rows = [{"id": i, "input": "", "prediction": p, "references": list(r)} for i, p, r in zip(ids, predictions, references)]
    if shuffle is not None:
        random.Random(shuffle).shuffle(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return read_predictions(path)


def mixed(share_good: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [g if rng.random() < share_good else b for g, b in zip(GOOD, BAD)]


def test_rows_are_matched_by_id_so_shuffled_files_give_the_same_result(tmp_path):
    a, b = mixed(0.7, 1), mixed(0.4, 2)
    in_order = paired_difference(write_run(tmp_path / "a.jsonl", a), write_run(tmp_path / "b.jsonl", b))
    shuffled = paired_difference(write_run(tmp_path / "a2.jsonl", a, shuffle=3), write_run(tmp_path / "b2.jsonl", b, shuffle=4))
    assert shuffled == in_order
    # by row position the shuffled files would pair different inputs: the aligned rows are the same inputs
    first, second = align([read_predictions(tmp_path / "a2.jsonl"), read_predictions(tmp_path / "b2.jsonl")])
    assert first.ids == second.ids and first.references == second.references


def test_the_full_test_set_values_are_the_projects_scorers(tmp_path):
    run = write_run(tmp_path / "run.jsonl", mixed(0.5, 0))
    refs = list(run.references)
    assert corpus_value(run, "bleu") == pytest.approx(100 * bleu(mteval_statistics(list(run.predictions), refs)))
    assert corpus_value(run, "rougeL") == pytest.approx(rouge(list(run.predictions), refs)["rougeL"])
    labels = ("thai", "french")
    topic = write_run(tmp_path / "topic.jsonl", ["thai", "French", "thai", "x"], [("thai",), ("french",), ("french",), ("thai",)])
    assert corpus_value(topic, "accuracy") == classification(list(topic.predictions), list(topic.references), labels)["accuracy"] == 50.0


def test_a_known_small_case(tmp_path):
    """Accuracy on 4 inputs: A right on all, B right on the first 2. The difference is 50 points; a
    resample of the 4 inputs with k of B's wrong inputs gives 25 k, so the contrasts lie in {0, 25, ..., 100}."""
    labels = [("a",), ("b",), ("c",), ("d",)]
    a = write_run(tmp_path / "a.jsonl", ["a", "b", "c", "d"], labels)
    b = write_run(tmp_path / "b.jsonl", ["a", "b", "x", "x"], labels)
    result = paired_difference(a, b, "accuracy", resamples=2000, seed=0)
    assert result.value == 50.0 and result.n_test == 4 and result.runs == 2
    assert result.ci_low in (0.0, 25.0) and result.ci_high in (75.0, 100.0)
    # the resampled difference is 25 x Binomial(4, 1/2): its sd is 25, the bootstrap's close to it
    assert result.se == pytest.approx(25.0, rel=0.1)
    assert 0.0 < result.p_value < 1.0


def test_identical_runs_differ_by_zero_with_an_interval_holding_zero(tmp_path):
    predictions = mixed(0.5, 7)
    result = paired_difference(write_run(tmp_path / "a.jsonl", predictions), write_run(tmp_path / "b.jsonl", predictions, shuffle=1))
    assert result.value == 0.0 and result.ci_low == 0.0 == result.ci_high and result.p_value == 1.0


def test_a_clear_difference_has_an_interval_excluding_zero(tmp_path):
    good, bad = write_run(tmp_path / "good.jsonl", mixed(0.9, 1)), write_run(tmp_path / "bad.jsonl", mixed(0.1, 2))
    result = paired_difference(good, bad, "bleu")
    assert result.ci_low > 0 and result.value > 20 and result.p_value < 0.01
    reverse = paired_difference(bad, good, "bleu")
    assert reverse.ci_high < 0 and reverse.value == pytest.approx(-result.value)
    single = interval(good, "bleu")
    assert single.ci_low < single.value < single.ci_high


def test_different_test_inputs_are_one_error_line_naming_both_files(tmp_path):
    a = write_run(tmp_path / "a.jsonl", GOOD)
    b = write_run(tmp_path / "b.jsonl", GOOD, ids=[f"other-{i}" for i in range(len(GOOD))])
    with pytest.raises(SignificanceError, match=r"b.jsonl scores other test inputs than .*a.jsonl \(24 ids only in the former"):
        paired_difference(a, b)
    c = write_run(tmp_path / "c.jsonl", GOOD[:-1], REFERENCES[:-1])
    with pytest.raises(SignificanceError, match=r"c.jsonl scores other test inputs .*1 only in the latter"):
        paired_difference(a, c)
    (tmp_path / "dup.jsonl").write_text((tmp_path / "a.jsonl").read_text().splitlines()[0] + "\n" +
                                        (tmp_path / "a.jsonl").read_text())
    with pytest.raises(SignificanceError, match=r"dup.jsonl: id 'e2e-000' appears twice"):
        read_predictions(tmp_path / "dup.jsonl")


def test_rows_without_references_take_them_from_the_archives_shared_file(tmp_path):
    """An archive keeps an experiment's references once (runs/references.jsonl): a run read from it
    is the same run as the original file; a missing or incomplete shared file is one error line."""
    original = write_run(tmp_path / "live" / "predictions.jsonl", mixed(0.6, 5), shuffle=1)
    archive = tmp_path / "runs"
    (archive / "sweep" / "0").mkdir(parents=True)
    rows = [json.loads(line) for line in (tmp_path / "live" / "predictions.jsonl").read_text().splitlines()]
    (archive / "references.jsonl").write_text("".join(json.dumps({"id": r["id"], "references": r["references"]}) + "\n"
                                                      for r in sorted(rows, key=lambda r: r["id"])))
    # the last row keeps its own references (they differ from the shared file's), the others none
    rows[-1]["references"] = ["its own reference ."]
    (archive / "sweep" / "0" / "predictions.jsonl").write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "references" or r is rows[-1]}) + "\n" for r in rows))
    restored = read_predictions(archive / "sweep" / "0")
    assert restored.ids == original.ids and restored.predictions == original.predictions
    assert restored.references[:-1] == original.references[:-1] and restored.references[-1] == ("its own reference .",)
    shared = (archive / "references.jsonl").read_text().splitlines()
    (archive / "references.jsonl").write_text("\n".join(shared[1:]) + "\n")
    with pytest.raises(SignificanceError, match=r"has no 'references' and .*runs/references.jsonl has none for id 'e2e-000'"):
        read_predictions(archive / "sweep" / "0")
    (archive / "references.jsonl").unlink()
    with pytest.raises(SignificanceError, match=r"no 'references' and a references.jsonl in a folder above it has none"):
        read_predictions(archive / "sweep" / "0")


def test_arms_of_several_seeds_average_their_runs_and_widen_the_interval(tmp_path):
    """Seed noise belongs in the interval: two runs of B that disagree widen the interval of A - B
    against one run of B alone; with resample_runs=False only the test inputs are resampled."""
    a = write_run(tmp_path / "a.jsonl", mixed(0.6, 1))
    b_runs = [write_run(tmp_path / f"b{s}.jsonl", mixed(share, s)) for s, share in ((2, 0.2), (3, 0.8))]
    both = paired_difference(a, b_runs)
    assert both.value == pytest.approx(corpus_value(a, "bleu") - sum(corpus_value(r, "bleu") for r in b_runs) / 2)
    inputs_only = paired_difference(a, b_runs, resample_runs=False)
    assert both.ci_high - both.ci_low > inputs_only.ci_high - inputs_only.ci_low
    narrows = contrast([(1, a), (-1, b_runs[0]), (-1, a), (1, b_runs[1])])  # (a - b2) - (a - b3) = b3 - b2
    assert narrows.value == pytest.approx(corpus_value(b_runs[1], "bleu") - corpus_value(b_runs[0], "bleu"))


def test_seed_spread_is_mean_sample_std_min_and_max(tmp_path):
    spread = seed_spread([60.0, 62.0, 64.0])
    assert (spread.n, spread.mean, spread.std, spread.min, spread.max) == (3, 62.0, 2.0, 60.0, 64.0)
    assert seed_spread([5.0]).std is None
    runs = [write_run(tmp_path / f"r{s}.jsonl", mixed(0.5, s)) for s in (1, 2)]
    assert run_spread(runs).mean == pytest.approx(sum(corpus_value(r, "bleu") for r in runs) / 2)
    with pytest.raises(SignificanceError, match="no completed run"):
        seed_spread([])


def test_the_minimum_detectable_effect_shrinks_with_more_test_inputs(tmp_path):
    small = paired_difference(write_run(tmp_path / "a.jsonl", mixed(0.6, 1)[:8], REFERENCES[:8]),
                              write_run(tmp_path / "b.jsonl", mixed(0.4, 2)[:8], REFERENCES[:8]))
    large = paired_difference(write_run(tmp_path / "A.jsonl", mixed(0.6, 1) * 1, REFERENCES),
                              write_run(tmp_path / "B.jsonl", mixed(0.4, 2), REFERENCES))
    assert large.mde < small.mde and small.mde == pytest.approx(2.8016 * small.se, rel=1e-3)
