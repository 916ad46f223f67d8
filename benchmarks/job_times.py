"""Job-minutes per rule of one Snakemake run, read off its log.

    python benchmarks/job_times.py .snakemake/log/<run>.snakemake.log [more logs ...]

A job's time runs from the timestamp above its "rule X:" block (or its "Job N: <message>" line)
to the timestamp above its "Finished jobid: N (Rule: X)" line; Snakemake prints both for every job. With several
logs (a run continued by a second invocation), the jobs of all of them are added up.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import re

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+")
    args = parser.parse_args()
    totals: dict[str, list[float]] = collections.defaultdict(list)
    for path in args.logs:
        with open(path, encoding="utf-8") as handle:
            for rule, values in job_seconds(handle.read()).items():
                totals[rule] += values
    print(f"{'rule':20s} {'jobs':>5s} {'job-min':>8s} {'s/job':>6s}")
    for rule, values in sorted(totals.items(), key=lambda item: -sum(item[1])):
        print(f"{rule:20s} {len(values):5d} {sum(values) / 60:8.1f} {sum(values) / len(values):6.1f}")
    print(f"{'total':20s} {sum(map(len, totals.values())):5d} {sum(map(sum, totals.values())) / 60:8.1f}")


if __name__ == "__main__":
    main()
