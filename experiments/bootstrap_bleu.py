"""Bootstrap each job's test BLEU (the E2E script's: mteval-v13a, prefixlab.tasks.scoring.mteval) over its test examples (95% interval, 1,000 resamples, seed 0) and
paired differences: against one reference job, or for named pairs of jobs (same resamples, so the
test inputs' difficulty cancels out).

usage: python experiments/bootstrap_bleu.py <sweep dir> [reference job]
       python experiments/bootstrap_bleu.py <sweep dir> <job>:<reference job> [<job>:<reference job> ...]"""
import json, random, sys
from pathlib import Path
from prefixlab.tasks.scoring.mteval import bleu_counts, bleu_of_counts

sweep = Path(sys.argv[1])
jobs = {}
for d in sorted(p for p in sweep.iterdir() if (p / "predictions.jsonl").is_file()):
    rows = [json.loads(l) for l in (d / "predictions.jsonl").read_text().splitlines()]
    jobs[d.name] = rows
if not jobs:
    sys.exit(f"no job folder with predictions.jsonl under {sweep}: give the sweep folder (multirun/experiments/<name>/<timestamp>)")
if len(sys.argv) > 2 and ":" in sys.argv[2]:
    pairs = [tuple(arg.split(":", 1)) for arg in sys.argv[2:]]
elif len(sys.argv) > 2:
    pairs = [(name, sys.argv[2]) for name in jobs if name != sys.argv[2]]
else:
    pairs = []
missing = sorted({name for pair in pairs for name in pair} - set(jobs))
if missing:
    sys.exit(f"no predictions for job(s) {missing} under {sweep}; jobs found: {sorted(jobs)}")
sizes = {len(rows) for rows in jobs.values()}
if len(sizes) != 1:
    sys.exit(f"jobs have different numbers of test predictions {sorted(sizes)}: a paired bootstrap needs the same test inputs")
n = sizes.pop()
rng = random.Random(0)
samples = [[rng.randrange(n) for _ in range(n)] for _ in range(1000)]
stats = {}
for name, rows in jobs.items():
    # BLEU's corpus statistics are sums over outputs: count each output once, resample the counts
    counts = bleu_counts([r["prediction"] for r in rows], [tuple(r["references"]) for r in rows])
    stats[name] = [100 * bleu_of_counts(counts)] + [100 * bleu_of_counts([counts[i] for i in s]) for s in samples]
    values = sorted(stats[name][1:])
    print(f"{name}: BLEU {stats[name][0]:.1f}  95% [{values[25]:.1f}, {values[974]:.1f}]  (n={n})")
for name, ref in pairs:
    diffs = sorted(a - b for a, b in zip(stats[name][1:], stats[ref][1:]))
    print(f"{name} - {ref}: {stats[name][0]-stats[ref][0]:+.1f}  95% [{diffs[25]:+.1f}, {diffs[974]:+.1f}]")
