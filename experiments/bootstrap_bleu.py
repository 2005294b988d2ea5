"""Bootstrap each job's test metric over its test inputs (95% interval, 1,000 resamples, seed 0) and
paired differences: against one reference job, or for named pairs of jobs. Rows are matched by
input id (never by row position), so both jobs must have scored the same test set; the same
resampled inputs serve both jobs, so the inputs' difficulty cancels out
(``prefixlab.sweeps.significance``; BLEU is the E2E script's, mteval-v13a).

usage: python experiments/bootstrap_bleu.py <sweep dir> [reference job] [--metric bleu]
       python experiments/bootstrap_bleu.py <sweep dir> <job>:<reference job> [<job>:<reference job> ...] [--metric rougeL]

For the paper's claims with verdicts, see ``prefixlab-report --scorecard experiments/``."""
import argparse
import sys
from pathlib import Path

from prefixlab.sweeps.significance import METRICS, SignificanceError, interval, paired_difference, read_predictions

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("sweep", type=Path, help="a sweep folder (multirun/experiments/<name>/<timestamp>)")
parser.add_argument("pairs", nargs="*", help="a reference job, or <job>:<reference job> pairs")
parser.add_argument("--metric", default="bleu", choices=sorted(METRICS))
parser.add_argument("--resamples", type=int, default=1000)
args = parser.parse_args()

jobs = {d.name: d for d in sorted(p for p in args.sweep.iterdir() if (p / "predictions.jsonl").is_file())} if args.sweep.is_dir() else {}
if not jobs:
    sys.exit(f"no job folder with predictions.jsonl under {args.sweep}: give the sweep folder (multirun/experiments/<name>/<timestamp>)")
if args.pairs and ":" in args.pairs[0]:
    pairs = [tuple(arg.split(":", 1)) for arg in args.pairs]
elif args.pairs:
    pairs = [(name, args.pairs[0]) for name in jobs if name != args.pairs[0]]
else:
    pairs = []
missing = sorted({name for pair in pairs for name in pair} - set(jobs))
if missing:
    sys.exit(f"no predictions for job(s) {missing} under {args.sweep}; jobs found: {sorted(jobs)}")
try:
    runs = {name: read_predictions(path) for name, path in jobs.items()}
    for name, run in runs.items():
        e = interval(run, args.metric, resamples=args.resamples)
        print(f"{name}: {args.metric} {e.value:.1f}  95% [{e.ci_low:.1f}, {e.ci_high:.1f}]  (n={e.n_test})")
    for name, ref in pairs:
        e = paired_difference(runs[name], runs[ref], args.metric, resamples=args.resamples)
        print(f"{name} - {ref}: {e.value:+.1f}  95% [{e.ci_low:+.1f}, {e.ci_high:+.1f}]  p={e.p_value:.3f}  "
              f"(n={e.n_test}; differences below {e.mde:.1f} are detected with less than 80% power)")
except SignificanceError as error:
    sys.exit(f"bootstrap_bleu.py: error: {error}")
