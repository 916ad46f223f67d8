"""The ``smile-vlm`` command line: one subcommand per workflow step.

Each subcommand parses its arguments and calls one public library function; Snakemake rules
call these commands, and a user can run any step by hand. Settings arrive as one JSON object
(``--settings``), the same dict the rule passes through ``params:``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text[:80]}") from err


def cmd_synth(args) -> None:
    from smile_vlm.atomic import atomic_path
    from smile_vlm.synth import generate

    # Written beside the root and renamed onto it: a rerun with other settings never leaves
    # stale scans of an earlier run behind, and a killed run leaves no SYNTHETIC.json.
    with atomic_path(args.root) as tmp:
        tmp.mkdir()
        summary = generate(args.dataset, tmp, args.settings)
    logging.info("synthetic %s: %d samples", args.dataset, len(summary.get("samples", [])))


def cmd_index(args) -> None:
    from smile_vlm.index import write_index

    write_index(args.dataset, Path(args.root), args.settings, args.manifest, args.rejects)


def cmd_render(args) -> None:
    from smile_vlm.render import render_shard

    render_shard(args.manifest, args.dataset, args.subject, Path(args.out), args.settings)


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

    train_main(args.passthrough)


def cmd_evaluate(args) -> None:
    from smile_vlm.evaluate import evaluate_fold
    from smile_vlm.folds import fold_of, read_folds

    repeat, fold = fold_of(read_folds(args.folds), args.k)
    evaluate_fold(args.store, args.folds, repeat, fold, args.model, args.variant, args.settings, args.out,
                  train_store=args.train_store, text_bank_file=args.text_bank)


def cmd_text_bank(args) -> None:
    from smile_vlm.train import write_text_bank

    write_text_bank(args.settings, args.out)


def cmd_table(args) -> None:
    from smile_vlm.report import write_table

    write_table(args.experiment, args.evals, args.out)


def cmd_figure(args) -> None:
    from smile_vlm.figures import make_figure

    make_figure(args.kind, args.inputs, args.out, table_out=args.table_out, reference=args.reference)


def cmd_summary(args) -> None:
    from smile_vlm.report import summary_markdown

    summary_markdown(args.tables, args.out, data_sources=args.data_sources)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smile-vlm", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic dataset in its raw format")
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", required=True, help="folder to (re)create")
    p.add_argument("--settings", type=_json, default={})
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("index", help="raw dataset root -> manifest.csv + rejects.csv")
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--settings", type=_json, default={})
    p.add_argument("--manifest", required=True)
    p.add_argument("--rejects", required=True)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("render", help="render one subject's samples to multiview PNGs")
    p.add_argument("--manifest", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--subject", required=True)
    p.add_argument("--out", required=True, help="shard folder; index.csv is written last")
    p.add_argument("--settings", type=_json, default={})
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("pack", help="render shards -> one Zarr store")
    p.add_argument("--manifest", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--settings", type=_json, default={})
    p.add_argument("--shards", nargs="+", required=True, help="shard index.csv files")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("contact-sheet", help="a grid of rendered samples per class")
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_contact_sheet)

    p = sub.add_parser("folds", help="subject-independent folds of an experiment")
    p.add_argument("--store", required=True)
    p.add_argument("--protocol", type=_json, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--train-store", default=None,
                   help="store trained on, when it differs from --store (split: cross)")
    p.set_defaults(func=cmd_folds)

    p = sub.add_parser("train", help="train one fold (same arguments as python -m smile_vlm.train)",
                       add_help=False)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="zero-shot and linear-probe metrics of one fold")
    p.add_argument("--store", required=True)
    p.add_argument("--folds", required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--variant", type=_json, required=True)
    p.add_argument("--settings", type=_json, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--train-store", default=None,
                   help="store trained on, when it differs from --store (split: cross)")
    p.add_argument("--text-bank", default=None,
                   help="prompt embeddings from `smile-vlm text-bank` (else the text encoder is loaded)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("text-bank", help="embed every prompt once with the frozen text encoder")
    p.add_argument("--settings", type=_json, required=True, help="sections encoders and prompts")
    p.add_argument("--out", required=True, help="text bank file (.pt)")
    p.set_defaults(func=cmd_text_bank)

    p = sub.add_parser("table", help="one experiment's table from its per-fold evaluations")
    p.add_argument("--experiment", type=_json, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--evals", nargs="+", required=True)
    p.set_defaults(func=cmd_table)

    from smile_vlm.figures import FIGURE_KINDS

    p = sub.add_parser("figure", help="one figure of the paper from evaluations, logs or tables")
    p.add_argument("kind", choices=FIGURE_KINDS)
    p.add_argument("--out", required=True, help="PNG")
    p.add_argument("--table-out", default=None, help="CSV of the figure's numbers (ablation)")
    p.add_argument("--reference", default="smile_vlm", help="the full model's variant name")
    p.add_argument("--inputs", nargs="+", required=True)
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser("summary", help="every table on one markdown page")
    p.add_argument("--out", required=True)
    p.add_argument("--data-sources", type=_json, default=None,
                   help='JSON {table: "synthetic" | "real"} shown under each table')
    p.add_argument("--tables", nargs="+", required=True)
    p.set_defaults(func=cmd_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `train` forwards its arguments untouched, so `smile-vlm train ...` and
    # `torchrun -m smile_vlm.train ...` accept exactly the same command line.
    if argv and argv[0] == "train":
        args = argparse.Namespace(func=cmd_train, passthrough=argv[1:], verbose=False)
    else:
        args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args.func(args)
    return 0
