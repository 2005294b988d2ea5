"""prefixlab-report: one table, the best jobs and the plots of a sweep.

    prefixlab-report multirun/2026-11-28/18-51-22-334819_p25418        # writes into the sweep folder
    prefixlab-report 'multirun/2026-11-28/*' --out reports/prefix_len   # several sweeps, one report
    prefixlab-report --newest multirun                                  # the newest sweep under multirun/ (make report)
    prefixlab-report --scorecard experiments/                           # the paper's claims: experiments/README.md
    prefixlab-report --claims experiments/initialization/readings.yaml  # other comparisons: printed, nothing written

Reads every job folder of the sweeps and writes ``report.md``, ``report.csv`` and the plots
(``prefixlab.sweeps.report.build_report``). Failed and unfinished jobs are rows with their status;
they never stop the report. ``--scorecard`` reads each ``experiments/<name>/claims.yaml``, compares
its arms by a paired bootstrap over the test inputs and writes each ``results.csv``, the evidence of
the runs it read (``experiments/<name>/runs/``, committed: a fresh clone rebuilds the table from it)
and the scorecard table of ``experiments/README.md`` (``prefixlab.sweeps.scorecard``). ``--claims FILE``
scores one claims file of any name the same way (the same runs, the same paired bootstrap) and only
prints its table: comparisons a README reads off a grid that are not the paper's claims, e.g. two arms
at one fixed learning rate.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

from prefixlab.sweeps.jobs import ReportError
from prefixlab.sweeps.report import build_report


def expand(patterns: list[str]) -> list[Path]:
    """Paths and globs, in the order given; a glob that matches nothing is kept (and reported as missing)."""
    dirs = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        dirs += [Path(m) for m in (matches or [pattern])]
    return list(dict.fromkeys(dirs))


def newest_sweep(root: Path) -> Path:
    """The sweep under ``root`` (at any depth) whose ``multirun.yaml`` Hydra wrote last: a real
    sweep, not a folder that only groups sweeps (``multirun/experiments/<name>/``)."""
    found = [(path.stat().st_mtime, path.parent) for path in Path(root).rglob("multirun.yaml")] if Path(root).is_dir() else []
    if not found:
        raise ReportError(f"no sweep under {root}/ (no folder holds a multirun.yaml); give a sweep folder")
    return max(found)[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prefixlab-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="*", help="multirun folder(s) or a glob of them")
    parser.add_argument("--newest", type=Path, metavar="ROOT",
                        help="report the newest sweep under ROOT (a folder with multirun.yaml), e.g. multirun")
    parser.add_argument("--out", type=Path, help="where report.md, report.csv and the plots go (default: the sweep folder)")
    parser.add_argument("--metric", help="the metric of the plots (default: the test figure of the sweep's "
                        "optimized_metric; the best job is always chosen on validation)")
    parser.add_argument("--scorecard", type=Path, metavar="EXPERIMENTS",
                        help="score the claims.yaml of every experiment under EXPERIMENTS (e.g. experiments/): writes "
                        "each <name>/results.csv and the table of EXPERIMENTS/README.md")
    parser.add_argument("--claims", type=Path, metavar="FILE",
                        help="score one claims file (any name, beside its experiment's runs/, e.g. "
                        "experiments/initialization/readings.yaml) and print its table; writes nothing")
    parser.add_argument("--runs-root", type=Path, metavar="ROOT",
                        help="with --scorecard or --claims: where the claims' sweep paths start (default: the folder "
                        "above EXPERIMENTS; for --claims FILE, the folder above FILE's experiments folder)")
    args = parser.parse_args(argv)
    if args.claims is not None:
        if args.sweeps or args.newest or args.scorecard is not None:
            parser.error("--claims reads the sweeps its file names: give no sweep folders, --newest or --scorecard")
        from prefixlab.sweeps.scorecard import comparisons_table, read_claims, score_experiment

        try:
            if not args.claims.is_file():
                raise ReportError(f"{args.claims}: no such claims file")
            experiment = read_claims(args.claims)
            # experiments/<name>/FILE: its sweep paths start at the project root, as the scorecard's do
            root = args.runs_root if args.runs_root is not None else args.claims.resolve().parent.parent.parent
            print(comparisons_table(score_experiment(experiment, root)))
        except (ReportError, OSError) as error:
            sys.exit(f"prefixlab-report: error: {error}")
        return
    if args.scorecard is not None:
        if args.sweeps or args.newest:
            parser.error("--scorecard reads the sweeps its claims.yaml files name: give no sweep folders or --newest")
        from prefixlab.sweeps.scorecard import build_scorecard

        try:
            readme = build_scorecard(args.scorecard, args.runs_root)
        except (ReportError, OSError) as error:
            sys.exit(f"prefixlab-report: error: {error}")
        print(f"scorecard: {readme} (and results.csv and runs/ of each experiment that has runs)")
        return
    if bool(args.sweeps) == bool(args.newest):
        parser.error("give sweep folders or --newest ROOT (one of the two)")
    try:
        sweeps = [newest_sweep(args.newest)] if args.newest else expand(args.sweeps)
        if args.out is None and len(sweeps) > 1:
            raise ReportError(f"{len(sweeps)} sweep folders given: choose where the report goes with --out")
        report = build_report(sweeps, args.out or sweeps[0], args.metric)
    except (ReportError, OSError) as error:
        sys.exit(f"prefixlab-report: error: {error}")
    print(f"report: {report} (report.csv and plots beside it)")


if __name__ == "__main__":
    main()
