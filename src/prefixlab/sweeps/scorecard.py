"""The scorecard: each claim of the paper, the paper's figure, ours with its interval, a verdict.

Each experiment folder (``experiments/<name>/``) holds a ``claims.yaml``::

    experiment: e2e_main_table
    command: prefixlab-train -m experiment=e2e_main_table
    sweeps: [multirun/experiments/e2e_main_table]   # where its sweeps are (relative to the project root)
    metric: bleu                                    # the default metric of its claims (sweeps/significance.METRICS)
    claims:
      - id: prefix_beats_adapter_0p1pct
        claim: PREFIX beats ADAPTER(0.1%) at a similar parameter budget
        paper: "69.7 vs 66.3 BLEU (Table 1)"
        paper_effect: 3.4          # optional: the paper's A - B, compared with what our test set can detect
        expect: greater            # A - B > 0; or less, not_less (A - B > -margin), equivalent (|A - B| < margin)
        a: {method: prefix}        # an arm: the overrides its jobs ran with; its runs over seeds / subsets
        b: {method: adapter_0p1pct}
        # or, for any weighted sum of arms: terms: [{weight: 1, arm: {...}}, {weight: -1, arm: {...}}, ...]

``build_scorecard`` reads every ``claims.yaml`` under a folder, finds each arm's completed jobs in
the experiment's sweeps (the jobs whose settings match, one run per seed / subset), compares the
arms by a paired bootstrap over the test inputs (``sweeps/significance.py``), and writes
``<name>/results.csv`` (one row per claim) and the scorecard table into ``README.md`` of that folder
(between ``<!-- scorecard -->`` marks; the text around them is kept).

The evidence of every run an arm matched (its saved config and overrides, its config-group choices,
``metrics.json`` and the ``id`` / ``prediction`` / ``references`` of its ``predictions.jsonl``) is
copied to ``<name>/runs/``, which is committed with the results: ``multirun/`` is git-ignored, so
without it a fresh clone could not rebuild a single row, and a later run could not be compared
with the ones already reported. The scorecard reads those archived runs beside the live sweeps (a
run in both counts once). An experiment with no run anywhere keeps its rows of the last scorecard;
an experiment being rerun in parts (its arms in several sweeps, over several sessions) keeps the
last rows of the claims whose arms have no run yet, marked as such (``KEPT``), so a half-done rerun
never turns a measured claim into "not run".

Verdicts (``verdict``), at the interval's level (95%): a claim "A > B" *agrees* when the interval of
A - B lies above 0, *disagrees* when it lies below 0, and is *unresolved* otherwise; the note then
gives the smallest effect this test set detects with 80% power (``Estimate.mde``), so an
unresolved verdict says whether more test inputs or seeds could resolve the paper's effect.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prefixlab.run.artifacts import atomic_replace_dir, atomic_write_jsonl, atomic_write_text
from prefixlab.sweeps.jobs import Job, ReportError, as_number, find_jobs, is_job_dir, read_job
from prefixlab.sweeps.significance import (SHARED_REFERENCES, Estimate, Predictions, Spread, contrast, corpus_value, get_metric,
                                           read_predictions, read_references, seed_spread)
from prefixlab.sweeps.table import REPEAT_KEYS, as_text

EXPECTS = ("greater", "less", "not_less", "equivalent")
VERDICTS = ("agrees", "disagrees", "unresolved")
RESULT_COLUMNS = ["claim_id", "claim", "quantity", "metric", "n_test", "runs", "value", "ci_low", "ci_high", "p_value",
                  "mde", "paper", "paper_effect", "verdict", "note", "arms"]
# the mark of a claim's row kept from the last scorecard while an arm of it has no run (a rerun in parts)
KEPT = "earlier runs, kept until this claim's arms are rerun"
# the mark of a verdict whose arms have one training run each: its interval resamples the test inputs only,
# and two runs of one setting that differ in nothing but float rounding can end several points apart
# (measured: experiments/prefix_length/README.md), so an "agrees" or "disagrees" may not survive a rerun
ONE_RUN = "one run per arm: the interval holds the test set's noise, not the training run's"
ONE_RUN_MARK = "(one run per arm)"  # beside an agrees / disagrees in a table
ONE_RUN_IN = "one run in"  # the note where only some arms have one run: "one run in <arm>: ..."
ONE_RUN_IN_MARK = "(one run in an arm)"
# Overrides that choose how a run is executed, not what it computes: a packed job's losses, prefix and
# predictions equal its run alone (tests/packed, docs/packed.md) and a resumed run continues the same
# run. So runs of one setting that differ only in these are runs of that setting (a grid packed on one
# subset, a rate rerun alone on the other), not an unnamed setting an arm must pick.
EXECUTION_KEYS = ("launcher", "resume")
START, END = "<!-- scorecard: start (written by prefixlab-report --scorecard; edit claims.yaml instead) -->", "<!-- scorecard: end -->"


# ---- the verdict ---------------------------------------------------------------------------------


def verdict(estimate: Estimate, expect: str, margin: float = 0.0, paper_effect: float | None = None) -> tuple[str, str]:
    """(verdict, note) of the claim ``expect`` about the contrast (A - B) at the interval's level.

    greater: A - B > 0; less: A - B < 0; not_less: A - B > -margin (A is not worse than B by more than
    the margin: "matches with fewer parameters"); equivalent: |A - B| < margin."""
    if expect not in EXPECTS:
        raise ReportError(f"expect={expect!r}: choose one of {', '.join(EXPECTS)}")
    if expect in ("not_less", "equivalent") and not margin > 0:
        raise ReportError(f"expect={expect} needs a margin > 0 (the largest difference that still counts as a match)")
    lo, hi = estimate.ci_low, estimate.ci_high
    level = f"{100 * estimate.confidence:g}%"
    if expect == "greater":
        result = "agrees" if lo > 0 else "disagrees" if hi < 0 else "unresolved"
    elif expect == "less":
        result = "agrees" if hi < 0 else "disagrees" if lo > 0 else "unresolved"
    elif expect == "not_less":
        result = "agrees" if lo > -margin else "disagrees" if hi < -margin else "unresolved"
    else:
        result = "agrees" if -margin < lo and hi < margin else "disagrees" if lo > margin or hi < -margin else "unresolved"
    mde = estimate.mde
    power = f"this test set (n={estimate.n_test}, {estimate.runs} runs) detects differences of {mde:.2g} or more with 80% power"
    if result != "unresolved":
        note = f"the {level} interval [{lo:.2f}, {hi:.2f}] excludes {_boundary(expect, margin)}"
        if borderline(estimate, expect):
            note += (f"; borderline: the two-sided p = {estimate.p_value:.3f} is not below {1 - estimate.confidence:g} "
                     "(the resampled contrasts are not symmetric about the estimate); more runs or test inputs "
                     "would settle it")
        return result, note
    note = f"the {level} interval [{lo:.2f}, {hi:.2f}] includes {_boundary(expect, margin)}; {power}"
    if paper_effect is not None:
        note += (f"; the paper's effect ({paper_effect:+.2g}) is below that: more test inputs or seeds are needed"
                 if abs(paper_effect) < mde else f"; the paper's effect ({paper_effect:+.2g}) is not below that")
    return result, note


def borderline(estimate: Estimate, expect: str) -> bool:
    """A greater / less claim whose interval excludes 0 while its p-value is not below the level.

    The percentile interval and the centred p-value are two readings of one bootstrap; where the
    resampled contrasts are not symmetric about the estimate they can fall on either side of the
    level. The verdict follows the interval (as documented), but a reader must see it is at the edge."""
    lo, hi = estimate.ci_low, estimate.ci_high
    return expect in ("greater", "less") and (lo > 0 or hi < 0) and estimate.p_value >= 1 - estimate.confidence


def _boundary(expect: str, margin: float) -> str:
    return {"greater": "0", "less": "0", "not_less": f"-{margin:g}", "equivalent": f"+-{margin:g}"}[expect]


# ---- claims files -------------------------------------------------------------------------------


@dataclass
class Claim:
    id: str
    claim: str
    paper: str
    expect: str
    terms: list[tuple[float, dict[str, Any]]]
    metric: str
    margin: float = 0.0
    paper_effect: float | None = None


@dataclass
class Experiment:
    name: str
    folder: Path
    command: str
    sweeps: list[str]
    claims: list[Claim] = field(default_factory=list)


def read_claims(path: Path) -> Experiment:
    """One ``claims.yaml``; a missing or wrong key is one ReportError line naming the file and the claim."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise ReportError(f"{path}: not readable YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise ReportError(f"{path}: expected keys experiment, command, sweeps, metric and a list of claims")
    name = str(data.get("experiment") or path.parent.name)
    sweeps = data.get("sweeps") or [f"multirun/experiments/{name}"]
    experiment = Experiment(name, path.parent, str(data.get("command", "")), [str(s) for s in sweeps])
    for i, item in enumerate(data["claims"]):
        where = f"{path}: claim {item.get('id', i) if isinstance(item, dict) else i}"
        if not isinstance(item, dict):
            raise ReportError(f"{where}: expected a mapping with id, claim, paper, expect and a / b (or terms)")
        missing = [k for k in ("id", "claim", "paper", "expect") if k not in item]
        if missing:
            raise ReportError(f"{where}: missing {', '.join(missing)}")
        if "terms" in item:
            terms = [(float(t["weight"]), dict(t["arm"])) for t in item["terms"]]
        elif isinstance(item.get("a"), dict) and isinstance(item.get("b"), dict):
            terms = [(1.0, dict(item["a"])), (-1.0, dict(item["b"]))]
        else:
            raise ReportError(f"{where}: give the arms as a: {{...}} and b: {{...}} (A - B), or as terms: [{{weight, arm}}, ...]")
        expect = str(item["expect"])
        if expect not in EXPECTS:
            raise ReportError(f"{where}: expect={expect!r}; choose one of {', '.join(EXPECTS)}")
        metric = str(item.get("metric", data.get("metric", "bleu")))
        try:
            get_metric(metric)
        except ReportError as error:
            raise ReportError(f"{where}: {error}") from None
        effect = item.get("paper_effect")
        experiment.claims.append(Claim(str(item["id"]), str(item["claim"]), str(item["paper"]), expect, terms, metric,
                                       float(item.get("margin", 0.0)), None if effect is None else float(effect)))
    return experiment


# ---- finding each arm's runs ----------------------------------------------------------------------


def sweep_folders(patterns: list[str], root: Path) -> list[Path]:
    """The sweeps under each pattern (relative to ``root``, globs allowed): every folder holding a
    ``multirun.yaml`` and a job folder below it, every single run folder below it that is in no such sweep (an arm run
    alone, ``prefixlab-train experiment=<name> method=<one> hydra.run.dir=<pattern>/<run>``), or the
    folder itself when it holds job folders."""
    found: list[Path] = []
    for pattern in patterns:
        full = str(Path(pattern) if Path(pattern).is_absolute() else root / pattern)
        for path in map(Path, sorted(glob.glob(full)) if glob.has_magic(full) else [full]):
            if not path.is_dir():
                continue
            sweeps = sorted({p.parent for p in path.rglob("multirun.yaml")})
            # A sweep refused before its first job (Hydra writes multirun.yaml before the launcher
            # checks the jobs) or not yet started has no job folder: nothing to score, skip it.
            sweeps = [s for s in sweeps if any(is_job_dir(child) for child in s.iterdir())]
            single_runs = sorted(p.parent.parent for p in path.rglob(".hydra/config.yaml")
                                 if not (p.parent.parent / "multirun.yaml").exists()
                                 and not any(s == p.parent.parent or s in p.parent.parent.parents for s in sweeps))
            holds_jobs = is_job_dir(path) or any(is_job_dir(child) for child in path.iterdir())
            found += (sweeps + single_runs) or ([path] if holds_jobs else [])
    return list(dict.fromkeys(found))


TUNED = "tuned"  # an arm's key with this value (or a list of values) is chosen on validation


def _is_tuned(value: Any) -> bool:
    return isinstance(value, list) or value == TUNED


def _same(value: Any, wanted: Any) -> bool:
    a, b = as_number(value), as_number(wanted)
    if a is not None and b is not None and not isinstance(value, bool) and not isinstance(wanted, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return as_text(value) == as_text(wanted)


def _describe(arm: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        return "tuned on validation" + (f" over {as_text(v)}" if isinstance(v, list) else "") if _is_tuned(v) else as_text(v)

    return ", ".join(f"{k}={value(v)}" for k, v in arm.items())


def _repeat(job: Job) -> tuple[str, ...]:
    """The seed / subset a job is one run of."""
    return tuple(as_text(job.setting(k)) for k in REPEAT_KEYS)


def _repeat_order(repeat: tuple[str, ...]) -> tuple:
    """Seeds / subsets in numeric order (so arms pair by position)."""
    return tuple((as_number(v) or 0.0, v) for v in repeat)


def _describe_repeats(repeats: set[tuple[str, ...]], among: set[tuple[str, ...]]) -> str:
    """``repeats`` as ``seed=42; seed=43``, naming only the repeat keys whose value differs ``among``
    the runs (every job carries ``task.subset_seed``; an experiment that never varies it should not
    read as if it did)."""
    varied = [i for i in range(len(REPEAT_KEYS)) if len({r[i] for r in among}) > 1]

    def one(repeat: tuple[str, ...]) -> str:
        return ", ".join(f"{REPEAT_KEYS[i]}={repeat[i]}" for i in varied if repeat[i] not in ("", "None"))

    return "; ".join(one(r) for r in sorted(repeats, key=_repeat_order))


def _validation_choice(matched: list[Job], tuned: list[str], metric: str, where: str) -> tuple[list[Job], str]:
    """The jobs of the setting of ``tuned`` keys with the best mean validation score (``val/<metric>``):
    a grid tuned per arm on validation, never on test.

    The settings are compared on the seeds / subsets that every one of them has run, so a setting
    with a second seed is not compared by a mean over other seeds than the rest (tune, then
    replicate: seeds added at the chosen rate alone leave the choice as it was). The chosen
    setting's runs are all returned; a seed / subset run twice counts once (the last sweep's)."""
    from prefixlab.tasks.scoring.directions import lower_is_better

    name = "val/" + metric.removeprefix("e2e_")
    groups: dict[tuple[str, ...], dict[tuple[str, ...], Job]] = {}
    for job in matched:  # in sweep order: the last run of a seed / subset stays
        groups.setdefault(tuple(as_text(job.setting(k)) for k in tuned), {})[_repeat(job)] = job
    shared = set.intersection(*(set(runs) for runs in groups.values()))
    compared_on = shared if shared else None  # no seed / subset in common: each setting's own mean
    scores = {}
    for setting, runs in groups.items():
        jobs = [job for repeat, job in runs.items() if compared_on is None or repeat in compared_on]
        values = [v for job in jobs if (v := as_number((job.metrics or {}).get(name))) is not None and math.isfinite(v)]
        if len(values) == len(jobs):
            scores[setting] = sum(values) / len(values)
    if not scores:
        raise ReportError(f"{where}: no run logged {name}, so {', '.join(tuned)} cannot be chosen on validation")
    sign = 1 if lower_is_better(name) else -1
    best = min(scores, key=lambda setting: sign * scores[setting])
    chosen = ", ".join(f"{k}={v}" for k, v in zip(tuned, best))
    chosen_runs = list(groups[best].values())
    if len(groups) == 1:  # a grid of one: say so, rather than "chosen" (issue 16 asks for a grid per method)
        return chosen_runs, f"{chosen} (the only setting run, not tuned; {name} {scores[best]:.4g})"
    uneven = compared_on is not None and any(len(runs) > len(compared_on) for runs in groups.values())
    on = ""
    if uneven:  # which seeds / subsets were compared, naming only the keys that vary over the arm's runs
        every_repeat = set().union(*(set(runs) for runs in groups.values()))
        on = f", on the runs every setting has ({_describe_repeats(compared_on, every_repeat)})"
    return chosen_runs, f"{chosen} (chosen on {name} {scores[best]:.4g} of {len(groups)} settings{on})"


def matching_jobs(jobs: list[Job], arm: dict[str, Any]) -> list[Job]:
    """The completed jobs with predictions whose settings are the arm's (every value of a tuned key)."""

    def matches(job: Job, key: str, wanted: Any) -> bool:
        if wanted == TUNED:
            return True
        return any(_same(job.setting(key), w) for w in wanted) if isinstance(wanted, list) else _same(job.setting(key), wanted)

    return [job for job in jobs if job.status == "completed" and (job.path / "predictions.jsonl").is_file()
            and all(matches(job, k, v) for k, v in arm.items())]


class MissingRunsError(ReportError):
    """An arm with no completed run yet (not a wrong claim or run): its claim's last row may be kept."""


def arm_runs(jobs: list[Job], arm: dict[str, Any], where: str, metric: str = "bleu") -> tuple[list[Predictions], str]:
    """The completed runs of one arm, ordered by their seed / subset (so arms pair by position); for a
    seed / subset run twice, the last sweep's run. A key given a list of values (``optim.lr: [5.0e-5,
    5.0e-4]``) or ``tuned`` (every value the sweeps ran) is tuned: the value whose runs have the best
    mean validation score is taken, and the second item returned says which. Raises ReportError when
    the matched jobs differ in anything but the seed / subset or how they were launched (the claim must
    name that setting)."""
    tuned = [k for k, v in arm.items() if _is_tuned(v)]
    matched = matching_jobs(jobs, arm)
    if not matched:
        raise MissingRunsError(f"{where}: no completed run with {_describe(arm)} and a predictions.jsonl")
    chosen = ""
    if tuned:
        matched, chosen = _validation_choice(matched, tuned, metric, where)
    keys = sorted({k for job in matched for k in job.overrides} - set(REPEAT_KEYS) - set(arm) - set(EXECUTION_KEYS))
    differing = [k for k in keys if len({as_text(job.setting(k)) for job in matched}) > 1]
    if differing:
        values = sorted({as_text(job.setting(differing[0])) for job in matched})
        raise ReportError(f"{where}: the runs with {_describe(arm)} differ in {differing[0]} ({', '.join(values)}): "
                          "add it to the arm, or list one term per value")
    by_repeat: dict[tuple[str, ...], Job] = {}
    for job in matched:
        by_repeat[_repeat(job)] = job
    ordered = sorted(by_repeat.items(), key=lambda item: _repeat_order(item[0]))
    return [read_predictions(job.path / "predictions.jsonl") for _, job in ordered], chosen


# ---- the runs' evidence, kept beside the claims ------------------------------------------------------

ARCHIVE = "runs"  # experiments/<name>/runs/: what each run the scorecard read leaves to rebuild its rows
_PREDICTION_KEYS = ("id", "prediction", "references")  # what the bootstrap reads; the inputs are the data's


def _archive_key(job: Path, experiment: Experiment, root: Path) -> str:
    """A run's place under ``runs/``: its folder below ``multirun/experiments/<name>/`` (a sweep's
    time stamp and job number, or ``single_runs/<run>``), else below the project root, else its name."""
    job = job.resolve()
    for base in (experiment.folder / ARCHIVE, root / "multirun" / "experiments" / experiment.name, root):
        base = base.resolve()
        if base in job.parents:
            return job.relative_to(base).as_posix()
    return job.name


def archived_jobs(experiment: Experiment) -> list[Job]:
    """The runs kept under ``<experiment>/runs/``, each labelled by its key."""
    folder = experiment.folder / ARCHIVE
    if not folder.is_dir():
        return []
    paths = sorted({p.parent for p in folder.rglob("metrics.json") if not any(part.startswith(".") for part in
                                                                               p.relative_to(folder).parts[:-1])})
    return [read_job(path, path.relative_to(folder).as_posix()) for path in paths]


def experiment_jobs(experiment: Experiment, root: Path) -> list[Job]:
    """The jobs of the experiment's sweeps, then its archived runs that are not among them."""
    sweeps = sweep_folders(experiment.sweeps, root)
    jobs = find_jobs(sweeps) if sweeps else []
    live = {_archive_key(job.path, experiment, root) for job in jobs}
    return jobs + [job for job in archived_jobs(experiment) if job.label not in live]


def archive_runs(experiment: Experiment, jobs: list[Job], root: Path) -> list[Path]:
    """Copy each live run's evidence to ``<experiment>/runs/<key>/`` (each folder swapped in whole,
    so an interrupted copy leaves the previous one); runs read from the archive are left as they are.

    The references, the same in every run of an experiment (its one test set) and most of a run's
    predictions file on E2E, are kept once in ``runs/references.jsonl``; a run's row keeps its own
    only where they differ from that file's. The file only grows (an id's first references stay), and
    it is written before the runs that rely on it."""
    archive = (experiment.folder / ARCHIVE).resolve()
    live = [job for job in jobs if archive not in job.path.resolve().parents]
    if not live:
        return []
    shared_file = archive / SHARED_REFERENCES
    shared = read_references(shared_file) if shared_file.is_file() else {}
    known = len(shared)
    runs_rows = []
    for job in live:
        rows = []
        for line in (job.path / "predictions.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                row = {k: row[k] for k in _PREDICTION_KEYS if k in row}
                # the references go to the shared file; the row keeps them only where they differ from it
                if "references" in row and shared.setdefault(str(row["id"]), tuple(row["references"])) == tuple(row["references"]):
                    del row["references"]
                rows.append(row)
        runs_rows.append(rows)
    if len(shared) > known:
        archive.mkdir(parents=True, exist_ok=True)
        atomic_write_jsonl(shared_file, [{"id": example_id, "references": list(refs)} for example_id, refs in sorted(shared.items())])

    written = []
    for job, rows in zip(live, runs_rows):
        def fill(folder: Path, job: Job = job, rows: list[dict] = rows) -> None:
            (folder / ".hydra").mkdir()
            for name in ("config.yaml", "overrides.yaml"):
                if (job.path / ".hydra" / name).is_file():
                    shutil.copyfile(job.path / ".hydra" / name, folder / ".hydra" / name)
            # of hydra.yaml only the config-group choices (method: prefix): no paths, no environment
            (folder / ".hydra" / "hydra.yaml").write_text(
                yaml.safe_dump({"hydra": {"runtime": {"choices": dict(job.choices)}}}, sort_keys=True), encoding="utf-8")
            shutil.copyfile(job.path / "metrics.json", folder / "metrics.json")
            (folder / "predictions.jsonl").write_text(
                "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")

        written.append(atomic_replace_dir(archive / _archive_key(job.path, experiment, root), fill))
    return written


# ---- the scorecard --------------------------------------------------------------------------------


@dataclass
class Row:
    experiment: Experiment
    claim: Claim
    estimate: Estimate | None
    spreads: list[Spread]  # each arm's metric over its runs (seeds, subsets), in the order of claim.terms
    verdict: str
    note: str
    missing_runs: bool = False  # an arm has no completed run yet
    choices: list[str] = field(default_factory=list)  # each tuned arm's chosen setting (also in the note)

    @property
    def one_run_per_arm(self) -> bool:
        """No arm has a second seed or subset (every arm has at least one run): training noise is not in the interval."""
        return self.estimate is not None and self.estimate.runs == len(self.claim.terms)

    @property
    def some_arm_has_one_run(self) -> bool:
        """An arm without a second seed or subset while another has one (its training noise is not in the interval)."""
        return not self.one_run_per_arm and any(spread.n == 1 for spread in self.spreads)

    @property
    def mark(self) -> str:
        """What a table shows beside an agrees / disagrees."""
        marks = []
        if self.one_run_per_arm:
            marks.append(ONE_RUN_MARK)
        elif self.some_arm_has_one_run:
            marks.append(ONE_RUN_IN_MARK)
        if self.estimate is not None and borderline(self.estimate, self.claim.expect):
            marks.append(f"(borderline: p = {self.estimate.p_value:.2g})")
        return "".join(f" {mark}" for mark in marks)

    @property
    def arm_values(self) -> list[float]:
        return [spread.mean for spread in self.spreads]


def _quantity(claim: Claim) -> str:
    if len(claim.terms) == 2 and claim.terms[0][0] == 1 and claim.terms[1][0] == -1:
        return f"({_describe(claim.terms[0][1])}) - ({_describe(claim.terms[1][1])})"
    return " ".join(f"{w:+g} x ({_describe(arm)})" for w, arm in claim.terms)


def score_experiment(experiment: Experiment, root: Path, resamples: int = 1000, seed: int = 0,
                     jobs: list[Job] | None = None) -> list[Row]:
    """One row per claim: the contrast with its interval and verdict, or why it could not be measured."""
    jobs = experiment_jobs(experiment, root) if jobs is None else jobs
    rows = []
    for claim in experiment.claims:
        where = f"{experiment.name}/{claim.id}"
        try:
            if not jobs:
                raise MissingRunsError(f"no sweep found under {', '.join(experiment.sweeps)} (run: {experiment.command})")
            found = [(weight, arm_runs(jobs, arm, where, claim.metric)) for weight, arm in claim.terms]
            arms = [(weight, runs) for weight, (runs, _) in found]
            estimate = contrast(arms, claim.metric, resamples=resamples, seed=seed)
        except ReportError as error:
            rows.append(Row(experiment, claim, None, [], "unresolved", f"not measured: {error}",
                            missing_runs=isinstance(error, MissingRunsError)))
            continue
        spreads = [seed_spread([corpus_value(run, claim.metric) for run in runs]) for _, runs in arms]
        result, note = verdict(estimate, claim.expect, claim.margin, claim.paper_effect)
        chosen = [f"{_describe({k: v for k, v in arm.items() if not _is_tuned(v)})}: {choice}"
                  for (_, arm), (_, (_, choice)) in zip(claim.terms, found) if choice]
        single = [arm for (_, arm), (_, runs) in zip(claim.terms, arms) if len(runs) == 1]
        if len(single) == len(arms):
            note += f"; {ONE_RUN}"
        elif single:
            those = "that arm" if len(single) == 1 else "those arms"
            note += f"; {ONE_RUN_IN} {' and '.join(_describe(arm) for arm in single)}: the interval holds no training noise of {those}"
        if chosen:
            note += "; " + "; ".join(chosen)
        rows.append(Row(experiment, claim, estimate, spreads, result, note, choices=chosen))
    return rows


def results_rows(rows: list[Row]) -> list[list[Any]]:
    out = []
    for row in rows:
        e = row.estimate
        out.append([row.claim.id, row.claim.claim, _quantity(row.claim), row.claim.metric,
                    e.n_test if e else None, e.runs if e else None, e.value if e else None, e.ci_low if e else None,
                    e.ci_high if e else None, e.p_value if e else None, e.mde if e else None, row.claim.paper,
                    row.claim.paper_effect, row.verdict, row.note, _arms_text(row)])
    return out


def _arms_text(row: Row) -> str:
    """Each arm's mean over its runs, with the spread over seeds / subsets where it has several."""
    parts = []
    for (_, arm), spread in zip(row.claim.terms, row.spreads):
        text = f"{_describe(arm)}: {spread.mean:.2f}"
        if spread.n > 1:
            text += f" (sd {spread.std:.2f}, {spread.min:.2f} to {spread.max:.2f} over {spread.n} runs)"
        parts.append(text)
    return "; ".join(parts)


def _ours(row: Row) -> str:
    e = row.estimate
    if e is None:
        return "not run"
    arms = " vs ".join(f"{v:.1f}" for v in row.arm_values) + ": " if len(row.arm_values) == 2 else ""
    runs = "" if row.one_run_per_arm else f", {e.runs} runs"
    return f"{arms}{e.value:+.1f} [{e.ci_low:+.1f}, {e.ci_high:+.1f}] {get_metric(row.claim.metric).unit} (n={e.n_test}{runs})"


TABLE_HEAD = ("| experiment | claim | paper | ours, small scale (A - B, 95% interval) | verdict | reproduce |",
              "|---|---|---|---|---|---|")


def _table_lines(text: str) -> list[str]:
    """The rows of the scorecard table between the marks of a README (none when it has no table)."""
    if START not in text or END not in text:
        return []
    return [line for line in text[text.index(START) + len(START):text.index(END)].splitlines()
            if line.startswith("| [")]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table_rows(rows: list[Row]) -> list[str]:
    """One table line per claim, without the head."""
    return ["| " + " | ".join(_cell(c) for c in (
        f"[{row.experiment.name}]({row.experiment.name}/README.md)", row.claim.claim, row.claim.paper, _ours(row),
        f"**{row.verdict}**" + (f" ({row.note})" if row.verdict == "unresolved" else row.mark),
        f"`{row.experiment.command}`" if row.experiment.command else "")) + " |" for row in rows]


def scorecard_table(rows: list[Row]) -> str:
    return "\n".join([*TABLE_HEAD, *_table_rows(rows)])


COMPARISONS_HEAD = ("| comparison | ours (A - B, 95% interval) | p | detectable at 80% power | verdict against `expect` | arms and settings |",
                    "|---|---|---|---|---|---|")


def comparisons_table(rows: list[Row]) -> str:
    """The rows of one claims file scored outside the scorecard (``prefixlab-report --claims FILE``):
    comparisons a README reads off a grid, such as two arms at one fixed learning rate, each with the
    same paired bootstrap as a scorecard claim."""
    lines = list(COMPARISONS_HEAD)
    for row in rows:
        e = row.estimate
        p_value = f"{e.p_value:.3f}" if e else ""
        mde = f"{e.mde:.1f}" if e and e.mde is not None and math.isfinite(e.mde) else ""
        settings = row.note if e is None else "; ".join([_arms_text(row), *row.choices])
        verdict_text = row.verdict + row.mark if e else ""
        lines.append("| " + " | ".join(_cell(c) for c in (row.claim.claim, _ours(row), p_value, mde, verdict_text, settings)) + " |")
    return "\n".join(lines)


def _keep_unrerun_claims(experiment: Experiment, scored: list[Row], csv_rows: list[list[Any]], table_rows: list[str],
                         old_lines: list[str]) -> None:
    """An experiment rerun in parts: a claim with an arm that has no run yet keeps its row of the last
    ``results.csv`` and of the last table (both marked ``KEPT``; the mark is added once), rather than
    "not run". Only a missing run is bridged so: a claim that cannot be scored for another reason (its
    runs differ in a setting it does not name) says so."""
    path = experiment.folder / "results.csv"
    if not path.is_file():
        return
    try:
        old_csv = {row.get("claim_id"): row for row in csv.DictReader(path.open(encoding="utf-8"))}
    except (csv.Error, UnicodeDecodeError):
        return
    for i, row in enumerate(scored):
        old = old_csv.get(row.claim.id)
        start = f"| [{experiment.name}]({experiment.name}/README.md) | {_cell(row.claim.claim)} |"
        line = next((line for line in old_lines if line.startswith(start)), None)
        if not row.missing_runs or old is None or line is None or not (old.get("value") or "").strip():
            continue
        print(f"prefixlab-report: {row.note.removeprefix('not measured: ')}; "
              "its row of the last scorecard is kept", file=sys.stderr)
        note = old.get("note") or ""
        csv_rows[i] = [old.get(column, "") for column in RESULT_COLUMNS]
        csv_rows[i][RESULT_COLUMNS.index("note")] = note if note.startswith(KEPT) else f"{KEPT}; {note}"
        verdict_cell = f"| **{old.get('verdict')}**"
        if KEPT not in line and verdict_cell in line:
            line = line.replace(verdict_cell, f"{verdict_cell} ({KEPT})", 1)
        table_rows[i] = line


def build_scorecard(folder: Path, root: Path | None = None, resamples: int = 1000, seed: int = 0) -> Path:
    """Score every ``<folder>/*/claims.yaml``; archive the runs each experiment's arms matched under
    ``runs/``, write its ``results.csv`` (when any of its claims was measured: an experiment not run, or
    rerun in parts with no claim complete yet, keeps its file and its rows of the last table; a claim
    still waiting for a run of an arm keeps its last row, marked ``KEPT``) and the table into
    ``<folder>/README.md``."""
    from prefixlab.sweeps.report import csv_text

    folder = Path(folder)
    files = sorted(folder.glob("*/claims.yaml"))
    if not files:
        raise ReportError(f"{folder}: no <experiment>/claims.yaml below it; give the experiments folder")
    root = Path(root) if root is not None else folder.resolve().parent
    readme = folder / "README.md"
    old_lines = _table_lines(readme.read_text(encoding="utf-8")) if readme.is_file() else []
    lines = []
    for path in files:
        experiment = read_claims(path)
        jobs = experiment_jobs(experiment, root)
        kept = [line for line in old_lines if line.startswith(f"| [{experiment.name}]({experiment.name}/README.md) |")]
        scored = score_experiment(experiment, root, resamples, seed, jobs)
        # every run an arm matched, a tuned arm's whole grid, and those of a claim still waiting for another arm
        used = {id(job): job for _, arm in (t for claim in experiment.claims for t in claim.terms)
                for job in matching_jobs(jobs, arm)}
        archive_runs(experiment, list(used.values()), root)
        if kept and all(row.estimate is None and row.missing_runs for row in scored):
            # no run here (a fresh clone before its archive existed), or a rerun begun with none of its
            # claims complete yet: its last rows stay as they were, not "not run"
            why = "no claim has a run of each arm yet" if jobs else f"no run under {', '.join(experiment.sweeps)} or {ARCHIVE}/"
            print(f"prefixlab-report: {experiment.folder}: {why}; its rows of the last scorecard are kept", file=sys.stderr)
            lines += kept
            continue
        table_rows = _table_rows(scored)
        if any(row.estimate is not None for row in scored):
            csv_rows = results_rows(scored)
            _keep_unrerun_claims(experiment, scored, csv_rows, table_rows, kept)
            atomic_write_text(experiment.folder / "results.csv", csv_text(RESULT_COLUMNS, csv_rows))
        lines += table_rows
    block = f"{START}\n" + "\n".join([*TABLE_HEAD, *lines]) + f"\n{END}"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else (
        "# Experiments: the paper's claims, tested\n\n"
        "Each row is one claim of Li & Liang (2021), the paper's figure, ours at small scale as the difference of the "
        "two arms with its 95% paired bootstrap interval over the test inputs, and the verdict at that power "
        "(`agrees`, `disagrees`, `unresolved`). Each experiment's `results.csv` has the numbers; its `claims.yaml` "
        "says what is compared.\n\n" + START + "\n" + END + "\n")
    if START in text and END in text:
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(readme, text)
    return readme
