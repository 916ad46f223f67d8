"""The ``smile-vlm`` command line: one subcommand per workflow step.

Each subcommand parses its arguments and calls one public library function; Snakemake rules
call these commands, and a user can run any step by hand. Settings arrive as one JSON object
(``--settings``), the same dict the rule passes through ``params:``. Speed-only values (threads,
workers) arrive as their own options, outside ``--settings``, so that changing them reruns no job.

Every command logs to stderr (INFO; ``-v`` for DEBUG), which a rule redirects to its ``log:`` file.
A user error (a bad argument, setting or input file) ends the command with one line on stderr and
exit status 2; ``-v`` also prints the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from smile_vlm import __version__
from smile_vlm.errors import ScanError
from smile_vlm.glcheck import OpenGLSetupError

log = logging.getLogger("smile_vlm.cli")

# Errors whose message tells the user what to change: a bad setting or argument (ValueError,
# KeyError), a missing or unreadable path (OSError), a broken input file (ScanError) and a
# PyOpenGL too old to render (OpenGLSetupError). Any other exception is a bug and keeps its
# traceback.
USER_ERRORS = (ScanError, ValueError, KeyError, OSError, OpenGLSetupError)
USER_ERROR_STATUS = 2

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text[:80]}") from err


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _dataset_names() -> list[str]:
    from smile_vlm.readers.names import CLASSES

    return list(CLASSES)


class _FigureKinds:
    """The figure kinds of smile_vlm.figures, looked up only when a figure command is parsed or
    its help is printed: importing figures loads matplotlib, which no other command needs."""

    def _kinds(self) -> tuple[str, ...]:
        from smile_vlm.figures import FIGURE_KINDS

        return FIGURE_KINDS

    def __contains__(self, kind) -> bool:
        return kind in self._kinds()

    def __iter__(self):
        return iter(self._kinds())


def cmd_synth(args) -> None:
    from smile_vlm.atomic import atomic_path
    from smile_vlm.synth import generate

    # Written beside the root and renamed onto it: a rerun with other settings never leaves
    # stale scans of an earlier run behind, and a killed run leaves no SYNTHETIC.json.
    with atomic_path(args.root) as tmp:
        tmp.mkdir()
        summary = generate(args.dataset, tmp, args.settings)
    log.info("synthetic %s: %d samples written to %s", args.dataset, len(summary.get("samples", [])), args.root)


def cmd_index(args) -> None:
    from smile_vlm.index import write_index

    settings = dict(args.settings)
    if args.workers is not None:
        settings["workers"] = args.workers
    write_index(args.dataset, Path(args.root), settings, args.manifest, args.rejects)


def cmd_render(args) -> None:
    from smile_vlm.render import render_shard

    settings = dict(args.settings)
    if args.threads is not None:
        settings["threads"] = args.threads
    render_shard(args.manifest, args.dataset, args.subject, Path(args.out), settings)


def cmd_pack(args) -> None:
    from smile_vlm.store import pack_store

    pack_store(args.manifest, args.shards, Path(args.out), args.dataset, args.settings)


def cmd_contact_sheet(args) -> None:
    from smile_vlm.store import contact_sheet

    contact_sheet(args.store, args.out)


def cmd_folds(args) -> None:
    from smile_vlm.folds import write_folds

    write_folds(args.store, args.protocol, args.out, train_store=args.train_store)


def cmd_train(args) -> None:
    from smile_vlm.train import main as train_main

    train_main(train_argv(args.passthrough))


def cmd_evaluate(args) -> None:
    from smile_vlm.evaluate import evaluate_fold
    from smile_vlm.folds import fold_of, read_folds

    settings = dict(args.settings)
    if args.threads is not None:
        settings["train"] = {**settings.get("train", {}), "threads": args.threads}
    repeat, fold = fold_of(read_folds(args.folds), args.k)
    evaluate_fold(args.store, args.folds, repeat, fold, args.model, args.variant, settings, args.out,
                  train_store=args.train_store, text_bank_file=args.text_bank)


def cmd_text_bank(args) -> None:
    from smile_vlm.train import write_text_bank

    started = time.perf_counter()
    write_text_bank(args.settings, args.out)
    log.info("text bank of prompt set %r written to %s in %.1f s", args.settings.get("prompts", {}).get("name"),
             args.out, time.perf_counter() - started)


def cmd_pretrain(args) -> None:
    from smile_vlm.pretrain import pretrain

    started = time.perf_counter()
    metadata = pretrain(args.settings, args.out, threads=args.threads)
    last = metadata["history"][-1]
    log.info("pretrained vision encoder written to %s in %.1f s (%d samples; monitored vl-align %.4f -> %.4f)",
             args.out, time.perf_counter() - started, metadata["corpus"]["samples"],
             metadata["history"][0]["monitor_vl_align"], last["monitor_vl_align"])


def cmd_table(args) -> None:
    from smile_vlm.report import write_table

    write_table(args.experiment, args.evals, args.out)


def cmd_figure(args) -> None:
    from smile_vlm.figures import make_figure

    make_figure(args.kind, args.inputs, args.out, table_out=args.table_out, reference=args.reference)


def cmd_summary(args) -> None:
    from smile_vlm.report import summary_markdown

    summary_markdown(args.tables, args.out, data_sources=args.data_sources)


def cmd_readme_results(args) -> None:
    from smile_vlm.report import update_readme

    changed = update_readme(args.readme, args.tables, check=args.check)
    if args.check and changed:
        raise ValueError(f"{args.readme}: result blocks {', '.join(changed)} differ from their tables; "
                         f"run smile-vlm readme-results --tables {' '.join(args.tables)}")
    log.info("%s: %s", args.readme, f"rewrote blocks {', '.join(changed)}" if changed else "blocks up to date")


def cmd_final_model(args) -> None:
    from smile_vlm.final import train_final

    settings = dict(args.settings)
    runtime = {key: value for key, value in (("threads", args.threads), ("workers", args.workers)) if value is not None}
    if runtime:
        settings["train"] = {**settings.get("train", {}), **runtime}
    train_final(args.store, args.folds, args.variant, settings, args.out, text_bank_file=args.text_bank)


def cmd_model_card(args) -> None:
    from smile_vlm.final import write_model_card

    write_model_card(args.model, args.table, args.experiment, args.out)


def cmd_predict(args) -> None:
    from smile_vlm.predict import predict_paths

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    classes = [name.strip() for name in args.classes.split(",") if name.strip()] if args.classes else None
    header_printed = False

    def echo(record: dict) -> None:
        """One line per sample as it is ready: the top class, then every class's probability in %."""
        nonlocal header_printed
        if record["status"] != "ok":
            log.warning("%s", record["error"])
            return
        classes = list(record["probabilities"])
        if not header_printed:
            print("\t".join(["input", "top_class", *classes, "frames"]), flush=True)
            header_printed = True
        cells = [f"{100 * record['probabilities'][name]:.1f}" for name in classes]
        print("\t".join([record["input"], record["top_class"], *cells, "|".join(map(str, record["frames"]))]),
              flush=True)

    records = predict_paths(args.model, args.inputs, args.out, args.json, classes=classes, prompts=args.prompts,
                            kind=args.kind, device=args.device, batch_size=args.batch_size, units=args.units,
                            echo=echo)
    failed = [record for record in records if record["status"] != "ok"]
    if failed and len(failed) == len(records):
        raise ScanError(failed[0]["input"], f"no sample could be predicted; first reason: {failed[0]['error']}")
    if failed:
        log.warning("%d of %d samples could not be predicted (status 'error' in the output)", len(failed), len(records))


def cmd_merge_predictions(args) -> None:
    from smile_vlm.predict import merge_predictions

    merge_predictions(args.inputs, args.out)


def train_argv(argv: list[str]) -> list[str]:
    """``smile-vlm train`` takes ``python -m smile_vlm.train``'s arguments plus ``--workers N``.

    The workflow passes DataLoader workers, like ``--threads``, outside ``--settings`` (a speed-only
    value must not be a Snakemake param); here it joins the settings' train section.
    """
    pre = argparse.ArgumentParser(prog="smile-vlm train", add_help=False, allow_abbrev=False)
    pre.add_argument("--workers", type=int, default=None)
    pre.add_argument("--settings", "--settings-json", dest="settings", type=_json, default=None)
    known, rest = pre.parse_known_args(argv)
    if known.workers is None:
        return list(argv)
    settings = dict(known.settings or {})
    settings["train"] = {**settings.get("train", {}), "workers": known.workers}
    return [*rest, "--settings", json.dumps(settings, sort_keys=True)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smile-vlm", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the traceback of a user error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    datasets = _dataset_names()
    settings_help = "settings as one JSON object (what the rule passes through params:)"

    p = sub.add_parser("synth", help="write a synthetic dataset in its raw format")
    p.add_argument("--dataset", required=True, choices=datasets, help="dataset whose raw format is written")
    p.add_argument("--root", required=True, help="folder to (re)create")
    p.add_argument("--settings", type=_json, default={}, help="the config's synthetic section, JSON")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("index", help="raw dataset root -> manifest.csv + rejects.csv")
    p.add_argument("--dataset", required=True, choices=datasets, help="which dataset's layout to read")
    p.add_argument("--root", required=True, help="raw dataset folder, as distributed")
    p.add_argument("--settings", type=_json, default={}, help=settings_help)
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="processes checking meshes (speed only; default: settings' workers)")
    p.add_argument("--manifest", required=True, help="manifest CSV to write")
    p.add_argument("--rejects", required=True, help="rejects CSV to write (file and reason)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("render", help="render one subject's samples to multiview PNGs")
    p.add_argument("--manifest", required=True, help="manifest CSV from `smile-vlm index`")
    p.add_argument("--dataset", required=True, choices=datasets, help="dataset of the manifest")
    p.add_argument("--subject", required=True, help="subject id as written in the manifest")
    p.add_argument("--out", required=True, help="shard folder; index.csv is written last")
    p.add_argument("--settings", type=_json, default={}, help="the config's render section, JSON")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="llvmpipe rasteriser threads (speed only; default: settings' threads)")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("pack", help="render shards -> one Zarr store")
    p.add_argument("--manifest", required=True, help="manifest CSV from `smile-vlm index`")
    p.add_argument("--dataset", required=True, choices=datasets, help="dataset of the manifest")
    p.add_argument("--out", required=True, help="Zarr store folder to write")
    p.add_argument("--settings", type=_json, default={}, help=settings_help)
    p.add_argument("--shards", nargs="+", required=True, help="shard index.csv files")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("contact-sheet", help="a grid of rendered samples per class")
    p.add_argument("--store", required=True, help="Zarr store from `smile-vlm pack`")
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=cmd_contact_sheet)

    p = sub.add_parser("folds", help="subject-independent folds of an experiment")
    p.add_argument("--store", required=True, help="Zarr store the experiment evaluates")
    p.add_argument("--protocol", type=_json, required=True, help="the experiment's protocol and classes, JSON")
    p.add_argument("--out", required=True, help="folds CSV to write")
    p.add_argument("--train-store", default=None,
                   help="store trained on, when it differs from --store (split: cross)")
    p.set_defaults(func=cmd_folds)

    p = sub.add_parser("train", help="train one fold (python -m smile_vlm.train's arguments, plus --workers)",
                       add_help=False)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="zero-shot and linear-probe metrics of one fold")
    p.add_argument("--store", required=True, help="Zarr store evaluated")
    p.add_argument("--folds", required=True, help="folds CSV from `smile-vlm folds`")
    p.add_argument("--k", type=int, required=True, help="job number (row k) of the folds table")
    p.add_argument("--model", required=True, help="model.pt of the trained fold")
    p.add_argument("--variant", type=_json, required=True, help="the model variant's settings, JSON")
    p.add_argument("--settings", type=_json, required=True, help=settings_help)
    p.add_argument("--out", required=True, help="evaluation JSON to write")
    p.add_argument("--train-store", default=None,
                   help="store trained on, when it differs from --store (split: cross)")
    p.add_argument("--text-bank", default=None,
                   help="prompt embeddings from `smile-vlm text-bank` (else the text encoder is loaded)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads (speed only; default: settings' train.threads)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("text-bank", help="embed every prompt once with the frozen text encoder")
    p.add_argument("--settings", type=_json, required=True, help="sections encoders and prompts, JSON")
    p.add_argument("--out", required=True, help="text bank file (.pt)")
    p.set_defaults(func=cmd_text_bank)

    p = sub.add_parser("pretrain", help="FACS-captioned pretraining of the vision encoder on generated faces")
    p.add_argument("--settings", type=_json, default={}, help="sections pretrain, render and encoders, JSON")
    p.add_argument("--out", required=True, help="vision.pt to write (corpus.npz and checkpoint.pt go beside it)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (speed only)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("table", help="one experiment's table from its per-fold evaluations")
    p.add_argument("--experiment", type=_json, required=True, help="the experiment's config entry, JSON")
    p.add_argument("--out", required=True, help="table CSV to write")
    p.add_argument("--evals", nargs="+", required=True, help="evaluation JSONs of every fold and variant")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("figure", help="one figure of the paper from evaluations, logs or tables")
    p.add_argument("kind", choices=_FigureKinds(), metavar="KIND",
                   help="which figure: %(choices)s")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--table-out", default=None, help="CSV of the figure's numbers (ablation)")
    p.add_argument("--reference", default="smile_vlm", help="the full model's variant name")
    p.add_argument("--inputs", nargs="+", required=True, help="evaluation JSONs, training logs or tables")
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser("summary", help="every table on one markdown page")
    p.add_argument("--out", required=True, help="markdown file to write")
    p.add_argument("--data-sources", type=_json, default=None,
                   help='JSON {table: "synthetic" | "real"} shown under each table')
    p.add_argument("--tables", nargs="+", required=True, help="table CSVs")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("readme-results", help="write tables' mean rows into a README's result blocks")
    p.add_argument("--tables", nargs="+", required=True,
                   help="table CSVs; each fills the block <!-- results:<CSV stem> start/end --> of the README")
    p.add_argument("--readme", default="README.md", help="markdown file with the marker lines (default: README.md)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 2 when a block differs from its table")
    p.set_defaults(func=cmd_readme_results)

    p = sub.add_parser("final-model", help="train an experiment's deployable model on every subject of its protocol")
    p.add_argument("--store", required=True, help="Zarr store trained on")
    p.add_argument("--folds", required=True, help="the experiment's folds CSV (which subjects the protocol uses)")
    p.add_argument("--variant", type=_json, required=True, help="the model variant's settings, JSON")
    p.add_argument("--settings", type=_json, required=True, help=settings_help)
    p.add_argument("--out", required=True, help="folder: model.pt, and run/ with the resumable checkpoint")
    p.add_argument("--text-bank", default=None,
                   help="prompt embeddings from `smile-vlm text-bank` (else the text encoder is loaded)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads (speed only; default: settings' train.threads)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers (speed only; default: settings' train.workers)")
    p.set_defaults(func=cmd_final_model)

    p = sub.add_parser("model-card", help="model_card.md of a deployable model, from its checkpoint and table")
    p.add_argument("--model", required=True, help="model.pt from `smile-vlm final-model`")
    p.add_argument("--table", required=True, help="the experiment's table CSV (cross-validated scores)")
    p.add_argument("--experiment", required=True, help="the experiment's name")
    p.add_argument("--out", required=True, help="markdown file to write")
    p.set_defaults(func=cmd_model_card)

    p = sub.add_parser("predict", help="expression probabilities of raw scans or 4D sequences with a trained model",
                       description="Render every input exactly as the model's training store was rendered "
                                   "(settings read from the checkpoint) and score it against the class prompts.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="scan file (.wrl .obj .bnt .ply), 4D sequence folder, or a folder of either")
    p.add_argument("--model", required=True, help="model.pt (results/<experiment>/final/<variant>/model.pt)")
    p.add_argument("--out", default=None, help="CSV to write: p_<class>, top_class, w_<view>, frames per input")
    p.add_argument("--json", default=None, help="JSON to write with the same predictions")
    p.add_argument("--classes", default=None,
                   help="comma-separated class names for zero-shot scoring (default: the trained classes)")
    p.add_argument("--prompts", default=None,
                   help="prompt YAML file or name for the classes (default: the prompts trained with)")
    p.add_argument("--kind", choices=("auto", "scan", "sequence"), default="auto",
                   help="what a folder of meshes is: auto follows the model (4D model: a sequence)")
    p.add_argument("--units", choices=("mm", "cm", "m"), default=None,
                   help="units of the input meshes when they differ from the training data's")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="samples per forward pass (speed only)")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (speed only)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("merge-predictions", help="one table of the per-subject prediction CSVs of `predict`")
    p.add_argument("--out", required=True, help="CSV to write (a subject column, from each input's file name)")
    p.add_argument("--inputs", nargs="+", required=True, help="prediction CSVs of `smile-vlm predict --out`")
    p.set_defaults(func=cmd_merge_predictions)
    return parser


def configure_logging(verbose: bool = False) -> None:
    """INFO (DEBUG with -v) to stderr, one timestamped line per record: a rule sends stderr to
    its log: file, so the library's logging.getLogger(__name__) lines land there."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT,
                        datefmt=LOG_DATE_FORMAT, stream=sys.stderr, force=True)
    logging.captureWarnings(True)
    # Third-party chatter would bury ours (PyOpenGL logs a missing accelerator at INFO).
    for noisy in ("matplotlib", "PIL", "numcodecs", "zarr", "urllib3", "filelock", "fsspec", "asyncio", "OpenGL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not sys.stderr.isatty():
        # A log file is no terminal: Hugging Face's progress bars (which transformers follows)
        # would write carriage-return frames into it. Read when transformers is imported.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _user_error_message(err: BaseException) -> str:
    # str(KeyError("x")) is "'x'": show the message itself.
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(message).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while argv and argv[0] in ("-v", "--verbose"):
        verbose = True
        argv = argv[1:]
    # `train` forwards its arguments to smile_vlm.train (only --workers is folded into --settings,
    # see train_argv), so `smile-vlm train ...` accepts what `python -m smile_vlm.train ...` does.
    if argv and argv[0] == "train":
        args = argparse.Namespace(func=cmd_train, command="train", passthrough=argv[1:], verbose=verbose)
    else:
        args = build_parser().parse_args(argv)
        args.verbose = args.verbose or verbose
    configure_logging(args.verbose)
    try:
        args.func(args)
    except USER_ERRORS as err:
        if args.verbose:
            log.exception("%s failed", args.command)
        print(f"smile-vlm {args.command}: error: {_user_error_message(err)}", file=sys.stderr)
        return USER_ERROR_STATUS
    return 0
