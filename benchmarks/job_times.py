"""Job-minutes and peak memory per rule, from the rules' benchmark files; training minutes per experiment.

    python benchmarks/job_times.py [logs/benchmarks] [--results results]

Every rule writes a Snakemake ``benchmark:`` file, ``logs/benchmarks/<rule>/<wildcards>.tsv``:
one header line, then one row per run of the job with its wall-clock seconds (``s``) and peak
resident memory (``max_rss``, MB). A job that ran several times (``--benchmark-repeats``) counts
with the mean of its rows. ``--results`` adds the training-loop seconds per experiment and variant
from each fold's ``train_log.jsonl``.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import math
from pathlib import Path


def read_benchmark(path: Path) -> dict[str, float]:
    """``{"s": mean seconds, "max_rss": peak MB}`` of one benchmark TSV (NaN where Snakemake wrote "-")."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path}: no benchmark row")

    def number(text: str) -> float:
        try:
            return float(text)
        except (TypeError, ValueError):
            return math.nan

    seconds = [number(row["s"]) for row in rows]
    rss = [number(row.get("max_rss")) for row in rows]
    return {"s": sum(seconds) / len(seconds), "max_rss": max(rss)}


def job_times(benchmarks: Path) -> dict[str, list[dict[str, float]]]:
    """``{rule: [benchmark of each job]}``; the rule is the first folder below ``benchmarks``."""
    jobs: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    for path in sorted(benchmarks.rglob("*.tsv")):
        rule = path.relative_to(benchmarks).parts[0]
        jobs[rule].append(read_benchmark(path))
    return jobs


def training_seconds(results: Path) -> dict[str, list[float]]:
    """``{"experiment/variant": [training-loop seconds of each fold]}`` from the runs' logs."""
    seconds: dict[str, list[float]] = collections.defaultdict(list)
    for log in sorted(results.glob("*/models/*/fold*/train_log.jsonl")):
        records = [json.loads(line) for line in log.read_text().splitlines()]
        experiment, variant = log.parts[-5], log.parts[-3]
        seconds[f"{experiment}/{variant}"].append(sum(r["seconds"] for r in records if r["kind"] == "epoch"))
    return seconds


def print_jobs(jobs: dict[str, list[dict[str, float]]]) -> None:
    print(f"{'rule':24s} {'jobs':>5s} {'minutes':>8s} {'s each':>7s} {'peak MB':>8s}")
    total_jobs, total_seconds = 0, 0.0
    for rule, runs in sorted(jobs.items(), key=lambda item: -sum(r["s"] for r in item[1])):
        seconds = sum(r["s"] for r in runs)
        peak = max((r["max_rss"] for r in runs if not math.isnan(r["max_rss"])), default=math.nan)
        print(f"{rule:24s} {len(runs):5d} {seconds / 60:8.1f} {seconds / len(runs):7.1f} {peak:8.0f}")
        total_jobs += len(runs)
        total_seconds += seconds
    print(f"{'total':24s} {total_jobs:5d} {total_seconds / 60:8.1f}")


def print_minutes(seconds: dict[str, list[float]], what: str, count: str) -> None:
    print(f"{what:36s} {count:>5s} {'minutes':>8s} {'s each':>7s}")
    for name, values in sorted(seconds.items(), key=lambda item: -sum(item[1])):
        print(f"{name:36s} {len(values):5d} {sum(values) / 60:8.1f} {sum(values) / len(values):7.1f}")
    print(f"{'total':36s} {sum(map(len, seconds.values())):5d} {sum(map(sum, seconds.values())) / 60:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="?", type=Path, default=Path("logs/benchmarks"),
                        help="folder of the rules' benchmark files (default: logs/benchmarks)")
    parser.add_argument("--results", type=Path, default=None, help="results folder of the run")
    args = parser.parse_args()
    if not args.benchmarks.is_dir():
        parser.error(f"{args.benchmarks} is not a folder: run the workflow first, or give its logs/benchmarks")
    print_jobs(job_times(args.benchmarks))
    if args.results is not None:
        print()
        print_minutes(training_seconds(args.results), "training loop: experiment/variant", "folds")


if __name__ == "__main__":
    main()
