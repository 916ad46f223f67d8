"""The cluster profiles, tested against a real single-node Slurm (scripts/slurm_local.sh).

The Slurm test installs and starts munged, slurmctld and slurmd on localhost, so it needs root
and apt-get; elsewhere it is skipped with the reason. The other tests need no cluster.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SLURM_SCRIPT = REPO / "scripts" / "slurm_local.sh"
SLURM_PROFILE = REPO / "profiles" / "slurm"
TOY_WORKFLOW = REPO / "tests" / "slurm_workflow" / "Snakefile"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

# Every Slurm client command; hiding them simulates a machine without Slurm.
SLURM_COMMANDS = frozenset(
    "sacct sacctmgr salloc sattach sbatch sbcast scancel scontrol scrontab sdiag sh5util sinfo "
    "sprio squeue sreport srun sshare sstat strigger sview".split()
)

# Small enough for any machine that can run the test; the profile's own values (GBs, hours)
# are checked without a cluster in test_profile_applies_without_slurm.
TEST_RESOURCES = [
    "--set-resources",
    "render:mem_mb=300",
    "render:runtime=5",
    "pack:mem_mb=300",
    "pack:runtime=5",
]


def plugin_missing() -> bool:
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return True
    return False


requires_plugin = pytest.mark.skipif(
    plugin_missing(),
    reason="snakemake-executor-plugin-slurm is not installed (pip install -e '.[cluster]')",
)


def why_no_local_slurm() -> str | None:
    if os.name != "posix" or os.geteuid() != 0:
        return "starting slurmctld/slurmd on localhost needs root"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "Slurm is not installed and there is no apt-get to install it"
    return None


def run_bounded(command, cwd, timeout, env=None) -> subprocess.CompletedProcess:
    """Run a command in its own process group; on timeout interrupt it and fail the test.

    A hung Snakemake must fail the test, not block CI. SIGINT first, because that is the signal
    on which the slurm executor cancels its jobs (SIGTERM makes it wait for them).
    """
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        pytest.fail(f"{' '.join(map(str, command))} hung for {timeout}s:\n{output[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output, None)


def controller_responds() -> bool:
    if shutil.which("scontrol") is None:
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    return "is UP" in ping.stdout


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node cluster; stopped again afterwards if this fixture started it."""
    reason = why_no_local_slurm()
    if reason:
        pytest.skip(reason)
    already_running = controller_responds()
    started = subprocess.run(
        [str(SLURM_SCRIPT), "up"], capture_output=True, text=True, timeout=600
    )
    try:
        assert started.returncode == 0, f"slurm_local.sh up failed:\n{started.stderr}"
        yield
    finally:
        if not already_running:
            subprocess.run([str(SLURM_SCRIPT), "down"], capture_output=True, timeout=120)


def scontrol_job(job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (finished jobs stay listed for MinJobAge, 300 s)."""
    shown = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job_id],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return dict(re.findall(r"(\S+?)=(\S*)", shown.stdout))


@requires_plugin
@pytest.mark.slow
def test_toy_workflow_runs_through_sbatch(slurm_cluster, tmp_path):
    # A second `up` finds everything running and changes nothing.
    again = subprocess.run([str(SLURM_SCRIPT), "up"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert re.search(r"debug\*\s+up\s+\S+\s+1\s+idle\s+localhost", again.stdout), again.stdout

    result = run_bounded(
        [*SNAKEMAKE, "-s", TOY_WORKFLOW, "--profile", SLURM_PROFILE, *TEST_RESOURCES],
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:]

    # Each job wrote the Slurm job id and CPU count it ran under; outside Slurm: local/none.
    rows = [line.split(",") for line in (tmp_path / "results/toy/store.csv").read_text().splitlines()]
    assert rows[0] == ["subject", "slurm_job_id", "cpus_per_task"]
    assert [row[0] for row in rows[1:]] == ["F001", "F002", "pack"]
    job_ids = {row[0]: row[1] for row in rows[1:]}
    assert all(job_id.isdigit() for job_id in job_ids.values()), rows
    assert len(set(job_ids.values())) == 3
    assert [row[2] for row in rows[1:]] == ["1", "1", "1"]

    # Every job was submitted by this run (its job name is the run id) with the resources asked
    # for, finished, and left its log where the profile says.
    run_id = re.search(r"SLURM run ID: (\S+)", result.stdout).group(1)
    for name, rule, wildcards in [
        ("F001", "render", "toy_F001"),
        ("F002", "render", "toy_F002"),
        ("pack", "pack", "toy"),
    ]:
        job = scontrol_job(job_ids[name])
        assert job["JobName"] == run_id
        assert job["JobState"] == "COMPLETED"
        assert job["Comment"] == f"rule_{rule}_wildcards_{wildcards}"
        assert job["MinMemoryNode"] == "300M"
        assert job["TimeLimit"] == "00:05:00"
        log = tmp_path.resolve() / "logs/slurm" / f"rule_{rule}" / wildcards / f"{job_ids[name]}.log"
        assert Path(job["StdOut"]) == log
        assert f"Finished jobid: 0 (Rule: {rule})" in log.read_text()


@requires_plugin
@pytest.mark.slow
def test_pipeline_renders_through_sbatch(slurm_cluster, tmp_path):
    """The project's own DAG (synth -> index checkpoint -> one render job per subject) through
    the slurm profile, on a tiny synthetic BU-4DFE."""
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({
        "synthetic": {"subjects": {"bu3dfe": 1, "bu4dfe": 2, "bp4d": 1, "bosphorus": 1, "4dme": 1}},
        "render": {"size": 32, "frames": 4},
        "index": {"workers": 1},
    }))
    subjects = ["F001", "M001"]
    shards = [f"results/bu4dfe/views/{subject}/index.csv" for subject in subjects]
    small = [f"{rule}:{resource}" for rule in ("synth", "index", "render")
             for resource in ("mem_mb=1000", "runtime=10")]
    result = run_bounded(
        [*SNAKEMAKE, "-s", REPO / "Snakefile", "--profile", SLURM_PROFILE,
         "--configfile", REPO / "config.yaml", tiny, "--set-resources", *small,
         "--set-threads", "index=1", "synth=1", "--", *shards],  # the profile's 8 CPUs exceed the test node
        cwd=tmp_path,
        timeout=480,
    )
    assert result.returncode == 0, result.stdout[-4000:]

    synthetic = json.loads((tmp_path / "results/synthetic/bu4dfe/SYNTHETIC.json").read_text())
    assert synthetic["subjects"] == subjects
    for subject, shard in zip(subjects, shards):
        rows = pd.read_csv(tmp_path / shard)
        expected = {s["sample_id"] for s in synthetic["samples"] if s["subject"] == subject}
        assert set(rows["sample_id"]) == expected and len(rows) == 6
        assert (rows["n_frames"] == 4).all()
        for images in rows["images"]:
            views = images.split("|")
            assert len(views) == 3  # yaws 0, -30, 30
            for view in views:
                with Image.open(tmp_path / view) as png:
                    assert png.size == (32, 32)

    # synth, index and both renders each ran as a Slurm job of this run.
    run_id = re.search(r"SLURM run ID: (\S+)", result.stdout).group(1)
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", result.stdout)
    rules = sorted(Path(log).relative_to(tmp_path.resolve() / "logs/slurm").parts[0] for _, log in submitted)
    assert rules == ["rule_index", "rule_render", "rule_render", "rule_synth"]
    for job_id, log in submitted:
        job = scontrol_job(job_id)
        assert (job["JobName"], job["JobState"]) == (run_id, "COMPLETED")
        assert Path(job["StdOut"]) == Path(log) and Path(log).is_file()


@requires_plugin
def test_profile_applies_without_slurm(tmp_path):
    """With no Slurm commands on PATH a dry run still plans with the profile's resources,
    and a real run stops at once, naming the missing command, instead of waiting forever."""
    no_slurm_bin = tmp_path / "bin"
    no_slurm_bin.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        for program in Path(directory).glob("*") if Path(directory).is_dir() else []:
            link = no_slurm_bin / program.name
            if program.name not in SLURM_COMMANDS and not link.exists():
                link.symlink_to(program)
    env = {**os.environ, "PATH": str(no_slurm_bin)}
    assert shutil.which("sbatch", path=env["PATH"]) is None
    workdir = tmp_path / "work"
    workdir.mkdir()
    command = [*SNAKEMAKE, "-s", TOY_WORKFLOW, "--profile", SLURM_PROFILE]

    dry = run_bounded([*command, "-n"], cwd=workdir, timeout=120, env=env)
    assert dry.returncode == 0, dry.stdout[-4000:]
    assert "This was a dry-run" in dry.stdout
    # render and pack get the profile's per-rule values, not the rules' own (200 MB, 5 min).
    planned = re.findall(r"rule (\w+):.*?resources: ([^\n]*)", dry.stdout, flags=re.S)
    resources = {rule: text for rule, text in planned}
    assert "mem_mb=4000" in resources["render"] and "runtime=180" in resources["render"]
    assert "mem_mb=8000" in resources["pack"] and "runtime=120" in resources["pack"]
    assert len(re.findall(r"rule render:", dry.stdout)) == 2

    real = run_bounded(command, cwd=workdir, timeout=120, env=env)
    assert real.returncode == 1, real.stdout[-4000:]
    assert re.search(r"Job submission failed with exception: .*No such file or directory: "
                     r"'(sacct|sbatch|sinfo)'", real.stdout), real.stdout[-4000:]
    assert not (workdir / "results").exists()


def profile_rule_names(profile: Path) -> set[str]:
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    return set(settings.get("set-resources", {})) | set(settings.get("set-threads", {}))


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_profile_rules_exist_in_workflow(profile):
    """Snakemake ignores per-rule settings for unknown rules, so a typo would go unnoticed."""
    if not (REPO / "Snakefile").exists():
        pytest.skip("the project Snakefile is not there yet")
    listed = subprocess.run(
        [*SNAKEMAKE, "--list-rules"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    workflow_rules = set(listed.stdout.split())
    assert profile_rule_names(REPO / "profiles" / profile) <= workflow_rules
    # An empty profiles/default/ would break every snakemake call in this directory.
    assert not (REPO / "profiles" / "default").exists()
