"""prefixlab-score: the official E2E script's 20 reference figures, its file formats, and one-line errors."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefixlab.cli import score

SHARED_E2E = Path(os.environ.get("PREFIXLAB_DATA", Path(__file__).resolve().parents[3] / ".." / "shared" / "data")) / "e2e"


def _official_module():
    script = SHARED_E2E / "official_scores.py"
    if not script.is_file():
        pytest.skip(f"{script} is absent: the official E2E reference figures live beside the repository "
                    f"(../shared/data, or $PREFIXLAB_DATA)")
    spec = importlib.util.spec_from_file_location("official_scores", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.cli  # the official E2E scorer in a subprocess (~35 s)
def test_prefixlab_score_reproduces_the_official_e2e_figures(tmp_path, capsys):
    """All 20 figures that e2e-metrics' measure_scores.py printed for the 4 cases of official_scores.py
    (547 dev-set MRs: leave-one-out hypotheses, upper-cased, lower-cased without punctuation, truncated)."""
    official = _official_module()
    subprocess.run([sys.executable, str(SHARED_E2E / "official_scores.py"), str(tmp_path)], check=True, capture_output=True)
    cases = list(official.EXPECTED)
    score.main(["--json", str(tmp_path / "refs.txt"), *(str(tmp_path / f"{case}.hyp.txt") for case in cases)])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(p["file"]).name for p in printed] == [f"{case}.hyp.txt" for case in cases]
    for case, got in zip(cases, printed):
        for metric, expected in official.EXPECTED[case].items():
            assert f"{got[metric]:.4f}" == f"{expected:.4f}", f"{case} {metric}: {got[metric]:.4f} vs official {expected}"


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _scores(capsys, *argv) -> dict:
    score.main(["--json", *map(str, argv)])
    return json.loads(capsys.readouterr().out)


@pytest.mark.cli  # every score runs Java (the PTB tokenizer, METEOR) in subprocesses
def test_reference_formats_of_the_e2e_script_give_the_same_scores(tmp_path, capsys):
    outputs = _write(tmp_path / "sys.txt", "The Eagle is a pub.\nBlue Spice is cheap.\n")
    blank_separated = _write(tmp_path / "refs.txt", "The Eagle is a pub.\nA pub: The Eagle.\n\nBlue Spice is cheap.\n")
    table = _write(tmp_path / "refs.csv", 'mr,ref\n"name[The Eagle]","The Eagle is a pub."\n'
                                          '"name[The Eagle]","A pub: The Eagle."\n"name[Blue Spice]","Blue Spice is cheap."\n')
    from_text, from_csv = _scores(capsys, blank_separated, outputs), _scores(capsys, table, outputs)
    assert set(from_text) == {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}
    assert from_text == pytest.approx(from_csv)
    assert from_text["BLEU"] == pytest.approx(1.0) and from_text["METEOR"] == pytest.approx(1.0)
    # no blank line at all: one reference per instance (as the script reads such a file)
    single = _write(tmp_path / "single.txt", "The Eagle is a pub.\nBlue Spice is cheap.\n")
    assert _scores(capsys, single, outputs)["BLEU"] == pytest.approx(1.0)


@pytest.mark.cli  # every score runs Java (the PTB tokenizer, METEOR) in subprocesses
def test_plain_output_is_the_official_format(tmp_path, capsys):
    outputs = _write(tmp_path / "sys.txt", "a pub\n")
    score.main([str(_write(tmp_path / "refs.txt", "a pub by the river\n")), str(outputs)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["SCORES:", "=============="]
    assert [line.split(":")[0] for line in lines[2:7]] == ["BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"]
    assert all(len(line.split(": ")[1].split(".")[1]) == 4 for line in lines[2:7])


@pytest.mark.parametrize("refs, outputs, message", [
    ("a\n\nb\n\nc\n", "a\nb\n", r"sys.txt: 2 outputs but 3 reference instances in .*refs.txt; the first instance "
                                r"without an output starts on .*refs.txt line 5"),
    ("a\n\nb\n", "a\nb\nc\n", r"sys.txt line 3: an output beyond the last of the 2 reference instances"),
    ("a\n\nb\n", "", r"sys.txt: the file is empty"),
    ("", "a\n", r"refs.txt: the file is empty"),
    ("a\n\nb\n", b"a\nb\xff\n", r"sys.txt line 2: not UTF-8 \(byte 0xff\)"),
    ("a\n\n\nb\n", "a\nb\n", r"refs.txt line 3: a second blank line in a row"),
])
def test_bad_input_is_one_line_naming_the_file_and_line(tmp_path, capsys, refs, outputs, message):
    refs_file, sys_file = _write(tmp_path / "refs.txt", refs), _write(tmp_path / "sys.txt", outputs)
    with pytest.raises(SystemExit) as stop:
        score.main([str(refs_file), str(sys_file)])
    line = str(stop.value.code)
    assert line.startswith("prefixlab-score: error: ") and "\n" not in line
    assert __import__("re").search(message, line), line
    assert capsys.readouterr().out == ""  # nothing scored before the input was checked


@pytest.mark.cli  # every score runs Java (the PTB tokenizer, METEOR) in subprocesses
def test_an_output_holding_a_unicode_line_separator_stays_one_output(tmp_path, capsys):
    # only \n ends a line: U+2028 inside an output is white space to mteval, not a new output
    outputs = _write(tmp_path / "sys.txt", "a pub\u2028by the river\n")
    assert _scores(capsys, _write(tmp_path / "refs.txt", "a pub by the river\n"), outputs)["BLEU"] == pytest.approx(1.0)


@pytest.mark.cli
def test_console_script_is_installed():
    done = subprocess.run(["prefixlab-score", "--help"], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert done.returncode == 0 and "official E2E NLG Challenge metrics" in done.stdout


@pytest.mark.parametrize("content, message", [
    (b'{"id": "a", "prediction": "x", "references": ["x"]}\n{"id": "b", "prediction": "\xff"}\n',
     r"bad.jsonl line 2: not UTF-8 \(byte 0xff\)"),
    (b"", r"bad.jsonl: no predictions"),
    (b'{"id": "a", "prediction": "x"}\n', r"bad.jsonl line 1: the row has no 'references'"),
])
def test_a_bad_predictions_jsonl_is_one_line_naming_the_file(tmp_path, capsys, content, message):
    bad = _write(tmp_path / "bad.jsonl", content)
    with pytest.raises(SystemExit) as stop:
        score.main([str(bad)])
    line = str(stop.value.code)
    assert line.startswith("prefixlab-score: error: ") and "\n" not in line
    assert __import__("re").search(message, line), line
    assert capsys.readouterr().out == ""


@pytest.mark.cli  # every score runs Java (the PTB tokenizer, METEOR) in subprocesses
def test_a_runs_predictions_jsonl_is_scored_with_its_references(tmp_path, capsys):
    rows = [{"id": "a", "prediction": "The Eagle is a pub.", "references": ["The Eagle is a pub.", "A pub."]},
            {"id": "b", "prediction": "Blue Spice is cheap.", "references": ["Blue Spice is cheap."]}]
    predictions = _write(tmp_path / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    refs = _write(tmp_path / "refs.txt", "The Eagle is a pub.\nA pub.\n\nBlue Spice is cheap.\n")
    outputs = _write(tmp_path / "sys.txt", "The Eagle is a pub.\nBlue Spice is cheap.\n")
    assert _scores(capsys, predictions) == pytest.approx(_scores(capsys, refs, outputs))
    broken = _write(tmp_path / "broken.jsonl", json.dumps(rows[0]) + "\n{\"prediction\": 3}\n")
    with pytest.raises(SystemExit, match=r"broken.jsonl line 2: not a predictions.jsonl row"):
        score.main([str(broken)])
    # an archived run (experiments/<name>/runs/): its rows' references are the experiment's, kept once
    (tmp_path / "runs" / "sweep" / "0").mkdir(parents=True)
    _write(tmp_path / "runs" / "references.jsonl", "".join(json.dumps({"id": r["id"], "references": r["references"]}) + "\n"
                                                          for r in rows))
    archived = _write(tmp_path / "runs" / "sweep" / "0" / "predictions.jsonl",
                      "".join(json.dumps({"id": r["id"], "prediction": r["prediction"]}) + "\n" for r in rows))
    assert _scores(capsys, archived) == pytest.approx(_scores(capsys, predictions))
