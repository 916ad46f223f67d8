"""Job-minutes per rule of one Snakemake run, read off its log; training minutes per experiment.

    python benchmarks/job_times.py .snakemake/log/<run>.snakemake.log [more logs ...] [--results results]

A job's time runs from the timestamp above its "rule X:" block (or its "Job N: <message>" line)
to the timestamp above its "Finished jobid: N (Rule: X)" line; Snakemake prints both for every job. With several
logs (a run continued by a second invocation), the jobs of all of them are added up.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import re
from pathlib import Path

TIMESTAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")
# Rules with a message: print "Job N: <message>" instead of a "jobid: N" line.
JOB_ID = re.compile(r"^\s*jobid: (\d+)$|^Job (\d+): ")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")


def job_seconds(log_text: str) -> dict[str, list[float]]:
    """``{rule: [seconds of each finished job]}``."""
    started: dict[int, datetime.datetime] = {}
    seconds: dict[str, list[float]] = collections.defaultdict(list)
    now = None
    for line in log_text.splitlines():
        if match := TIMESTAMP.match(line):
            now = datetime.datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
        elif (match := JOB_ID.match(line)) and now is not None:
            started.setdefault(int(match.group(1) or match.group(2)), now)
        elif (match := FINISHED.match(line)) and int(match.group(1)) in started:
            seconds[match.group(2)].append((now - started[int(match.group(1))]).total_seconds())
    return seconds


def training_seconds(results: Path) -> dict[str, list[float]]:
    """``{"experiment/variant": [training-loop seconds of each fold]}`` from the runs' logs."""
    seconds: dict[str, list[float]] = collections.defaultdict(list)
    for log in sorted(results.glob("*/models/*/fold*/train_log.jsonl")):
        records = [json.loads(line) for line in log.read_text().splitlines()]
        experiment, variant = log.parts[-5], log.parts[-3]
        seconds[f"{experiment}/{variant}"].append(sum(r["seconds"] for r in records if r["kind"] == "epoch"))
    return seconds


def print_minutes(seconds: dict[str, list[float]], what: str, count: str) -> None:
    print(f"{what:36s} {count:>5s} {'minutes':>8s} {'s each':>7s}")
    for name, values in sorted(seconds.items(), key=lambda item: -sum(item[1])):
        print(f"{name:36s} {len(values):5d} {sum(values) / 60:8.1f} {sum(values) / len(values):7.1f}")
    print(f"{'total':36s} {sum(map(len, seconds.values())):5d} {sum(map(sum, seconds.values())) / 60:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+")
    parser.add_argument("--results", type=Path, default=None, help="results folder of the run")
    args = parser.parse_args()
    totals: dict[str, list[float]] = collections.defaultdict(list)
    for path in args.logs:
        with open(path, encoding="utf-8") as handle:
            for rule, values in job_seconds(handle.read()).items():
                totals[rule] += values
    print_minutes(totals, "rule", "jobs")
    if args.results is not None:
        print()
        print_minutes(training_seconds(args.results), "training loop: experiment/variant", "folds")


if __name__ == "__main__":
    main()
