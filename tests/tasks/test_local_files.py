"""task=local: CSV / JSON-lines files per split, column mapping, one clear DataError per problem."""

import json

import pytest

from prefixlab.tasks import DataError, build_task


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def local(tmp_path, **overrides):
    rows = [{"q": f"question {i}", "a": f"answer {i}"} for i in range(5)]
    files = {f"{split}_file": write_jsonl(tmp_path / f"{split}.jsonl", rows) for split in ("train", "validation", "test")}
    return build_task("local", **{**files, "source_column": "q", "target_column": "a", **overrides})


def test_jsonl_and_csv_with_column_mapping(tmp_path):
    task = local(tmp_path)
    assert [(e.source, e.target) for e in task.load_split("train")][:2] == [("question 0", "answer 0"), ("question 1", "answer 1")]
    csv_file = tmp_path / "test.csv"
    csv_file.write_text('q,a,other\n"in, one",out one,x\nin two,out two,y\nin two,out 2,z\n')
    task = local(tmp_path, test_file=str(csv_file))
    test = task.load_split("test")
    # evaluation rows sharing a source are one example with all their targets as references
    assert [(e.source, e.references) for e in test] == [("in, one", ("out one",)), ("in two", ("out two", "out 2"))]


def test_missing_column_names_file_split_and_column(tmp_path):
    with pytest.raises(DataError, match=r"train\.jsonl \(train split\): line 1 has no column 'question'"):
        local(tmp_path, source_column="question").load_split("train")
    bad_csv = tmp_path / "v.csv"
    bad_csv.write_text("q,answer\nx,y\n")
    with pytest.raises(DataError, match=r"v\.csv \(validation split\): no column 'a'"):
        local(tmp_path, validation_file=str(bad_csv)).load_split("validation")


def test_empty_split_and_empty_value_name_the_row(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl \(test split\): no rows"):
        local(tmp_path, test_file=str(empty)).load_split("test")
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"q": "x", "a": "y"}, {"q": "x", "a": " "}])
    with pytest.raises(DataError, match=r"blank\.jsonl \(train split\): row 2: column 'a' is empty"):
        local(tmp_path, train_file=blank).load_split("train")


def test_unreadable_missing_or_malformed_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl \(validation split\): cannot read the file"):
        local(tmp_path, validation_file=str(tmp_path / "nope.jsonl")).load_split("validation")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"q": "x", "a": "y"}\n{"q": \n')
    with pytest.raises(DataError, match=r"broken\.jsonl \(train split\): line 2 is not valid JSON"):
        local(tmp_path, train_file=str(broken)).load_split("train")
    with pytest.raises(DataError, match=r"no file for the test split; set task.test_file"):
        build_task("local", train_file="a.jsonl").load_split("test")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00q,a")
    with pytest.raises(DataError, match=r"bin\.csv \(train split\): cannot read the file"):
        local(tmp_path, train_file=str(binary)).load_split("train")


def test_local_scores_text_metrics():
    scores = build_task("local").score(["answer 1"], [("answer 1",)])
    assert scores["exact_match"] == 100.0 and scores["rougeL"] == 100.0 and scores["bleu"] == pytest.approx(0.0)


# ---- regression tests from the adversarial review (issue: reliability beyond the happy faults) ----

def test_jsonl_values_holding_unicode_line_separators_are_one_row(tmp_path):
    # JSON allows U+2028 / U+0085 unescaped inside strings; str.splitlines() broke such rows in two
    rows = [{"source": "line\u2028separator", "target": "next\x85line"}, {"source": "b", "target": "c"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    task = build_task("local", train_file=str(tmp_path / "train.jsonl"))
    examples = task.load_split("train")
    assert [(e.source, e.target) for e in examples] == [("line\u2028separator", "next\x85line"), ("b", "c")]


def test_csv_with_a_byte_order_mark_finds_its_first_column(tmp_path):
    (tmp_path / "train.csv").write_text("source,target\nhello,world\n", encoding="utf-8-sig")
    examples = build_task("local", train_file=str(tmp_path / "train.csv")).load_split("train")
    assert [(e.source, e.target) for e in examples] == [("hello", "world")]


def test_csv_with_a_duplicate_header_is_refused_naming_the_column(tmp_path):
    (tmp_path / "train.csv").write_text("source,target,target\na,b,c\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.csv \(train split\): the header names column\(s\) \['target'\] more than once"):
        build_task("local", train_file=str(tmp_path / "train.csv")).load_split("train")


def test_csv_field_larger_than_the_csv_modules_default_limit(tmp_path):
    big = "word " * 1_000_000  # 5 MB in one field; the csv module's default limit is 128 KiB
    (tmp_path / "train.csv").write_text(f'source,target\n"{big}",short\n', encoding="utf-8")
    examples = build_task("local", train_file=str(tmp_path / "train.csv")).load_split("train")
    assert len(examples) == 1 and len(examples[0].source) == len(big.strip())
