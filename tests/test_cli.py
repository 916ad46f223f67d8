"""The smile-vlm command line: help, version, logging and how user errors end a command."""

import argparse
import json
import logging
import subprocess
import sys

import pytest

from smile_vlm import __version__
from smile_vlm.cli import build_parser, configure_logging, main
from smile_vlm.readers.names import CLASSES

CLI = [sys.executable, "-m", "smile_vlm"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"smile-vlm {__version__}"


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    undocumented = [
        f"{name} {action.dest}"
        for name, sub in subparsers.choices.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert undocumented == []
    assert all(choice.help for choice in subparsers._choices_actions)


def test_dataset_options_offer_the_five_datasets():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("synth", "index", "render", "pack"):
        dataset = next(a for a in subparsers.choices[name]._actions if a.dest == "dataset")
        assert list(dataset.choices) == list(CLASSES), name


def test_a_missing_input_is_one_line_and_exit_status_2(tmp_path):
    result = run_cli("folds", "--store", str(tmp_path / "missing.zarr"), "--protocol", "{}",
                     "--out", str(tmp_path / "folds.csv"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"smile-vlm folds: error: {tmp_path / 'missing.zarr'}: no Zarr v3 store here (zarr.json missing)"]
    assert not (tmp_path / "folds.csv").exists()


def test_verbose_adds_the_traceback(tmp_path):
    result = run_cli("-v", "folds", "--store", str(tmp_path / "missing.zarr"), "--protocol", "{}",
                     "--out", str(tmp_path / "folds.csv"))
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("smile-vlm folds: error: ")


def test_bad_arguments_exit_2_without_traceback():
    for args in (["index", "--dataset", "bu5dfe", "--root", "x", "--manifest", "m", "--rejects", "r"],
                 ["synth", "--dataset", "bu4dfe", "--root", "x", "--settings", "{not json"]):
        result = run_cli(*args)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr
        assert "invalid choice: 'bu5dfe'" in result.stderr or "not valid JSON" in result.stderr


def test_a_bad_setting_is_a_user_error(tmp_path):
    # An unknown dataset reaches the library as a ValueError with the known names.
    assert main(["synth", "--dataset", "bu4dfe", "--root", str(tmp_path / "x"),
                 "--settings", json.dumps({"face_source": "ict", "ict_dir": str(tmp_path / "none")})]) == 2


def test_bugs_keep_their_traceback(monkeypatch):
    import smile_vlm.commands.preprocess as preprocess

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(preprocess, "cmd_contact_sheet", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["contact-sheet", "--store", "s", "--out", "o"])


def test_log_lines_carry_time_level_and_module(capsys):
    configure_logging()
    logging.getLogger("smile_vlm.train").info("epoch 1/2")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    date, time, level, rest = line.split(" ", 3)
    assert len(date) == 10 and len(time) == 8 and level == "INFO"
    assert rest == "smile_vlm.train: epoch 1/2"


def test_train_threads_and_workers_join_the_train_settings_and_nothing_else_changes(monkeypatch, tmp_path):
    import smile_vlm.folds as folds
    import smile_vlm.train as train

    seen = {}
    monkeypatch.setattr(folds, "read_folds", lambda path: None)
    monkeypatch.setattr(folds, "fold_of", lambda table, k: (0, k))
    monkeypatch.setattr(train, "train_fold", lambda *args, **kwargs: seen.update(args=args) or tmp_path / "model.pt")
    settings = {"train": {"epochs": 2}, "prompts": {"name": "emotions"}}
    argv = ["train", "--store", "s.zarr", "--folds", "f.csv", "--k", "3", "--settings", json.dumps(settings),
            "--out", str(tmp_path), "--threads", "2", "--workers", "3"]
    assert main(argv) == 0
    assert seen["args"][3] == 3 and seen["args"][5] == {"train": {"epochs": 2, "threads": 2, "workers": 3},
                                                         "prompts": {"name": "emotions"}}
    assert main(argv[:-4]) == 0
    assert seen["args"][5] == settings


def test_commands_that_draw_nothing_do_not_import_matplotlib():
    code = ("import sys; from smile_vlm.cli import build_parser; "
            "build_parser().parse_args(['render', '--manifest', 'm', '--dataset', 'bu4dfe', "
            "'--subject', 's', '--out', 'o']); print('matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
