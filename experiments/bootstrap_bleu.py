"""Bootstrap each job's test BLEU over its test examples (95% interval, 1,000 resamples, seed 0) and
the paired difference against a reference job. usage: python experiments/bootstrap_bleu.py <sweep dir> [reference job]"""
import json, random, sys
from pathlib import Path
from prefixlab.scoring import corpus_bleu

sweep = Path(sys.argv[1]); ref_job = sys.argv[2] if len(sys.argv) > 2 else None
jobs = {}
for d in sorted(p for p in sweep.iterdir() if (p / "predictions.jsonl").is_file()):
    rows = [json.loads(l) for l in (d / "predictions.jsonl").read_text().splitlines()]
    jobs[d.name] = rows
rng = random.Random(0)
n = len(next(iter(jobs.values())))
samples = [[rng.randrange(n) for _ in range(n)] for _ in range(1000)]
def bleu(rows, idx): return corpus_bleu([rows[i]["prediction"] for i in idx], [tuple(rows[i]["references"]) for i in idx])
stats = {}
for name, rows in jobs.items():
    values = sorted(bleu(rows, s) for s in samples)
    stats[name] = [bleu(rows, range(n))] + [bleu(rows, s) for s in samples]
    print(f"{name}: BLEU {stats[name][0]:.1f}  95% [{values[25]:.1f}, {values[974]:.1f}]  (n={n})")
if ref_job:
    for name in jobs:
        if name == ref_job: continue
        diffs = sorted(a - b for a, b in zip(stats[name][1:], stats[ref_job][1:]))
        print(f"{name} - {ref_job}: {stats[name][0]-stats[ref_job][0]:+.1f}  95% [{diffs[25]:+.1f}, {diffs[974]:+.1f}]")
