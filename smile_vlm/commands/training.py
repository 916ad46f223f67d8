"""Training commands: folds, the text bank, pretraining, one fold, its evaluation, the deployable model."""

from __future__ import annotations

import time

from smile_vlm.commands import SETTINGS_HELP, json_arg, log, positive_int


def _with_speed_options(settings: dict, args) -> dict:
    """The settings with the job's threads (and workers) in the train section: speed only, so they
    arrive as options of their own, never in --settings (a Snakemake param)."""
    speed = {key: getattr(args, key, None) for key in ("threads", "workers")}
    speed = {key: value for key, value in speed.items() if value is not None}
    return {**settings, "train": {**settings.get("train", {}), **speed}} if speed else dict(settings)


def _add_run_options(p, workers: bool = True) -> None:
    """--text-bank and the speed-only --threads/--workers of the jobs that run a model."""
    p.add_argument("--text-bank", default=None,
                   help="prompt embeddings from `smile-vlm text-bank` (else the text encoder is loaded)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (speed only; default: settings' train.threads)")
    if workers:
        p.add_argument("--workers", type=int, default=None,
                       help="DataLoader workers (speed only; default: settings' train.workers)")


def cmd_folds(args) -> None:
    from smile_vlm.folds import write_folds

    write_folds(args.store, args.protocol, args.out, train_store=args.train_store)


def cmd_train(args) -> None:
    import torch.distributed as dist

    from smile_vlm.folds import fold_of, read_folds
    from smile_vlm.train import train_fold

    repeat, fold = fold_of(read_folds(args.folds), args.k)
    settings = _with_speed_options(args.settings, args)
    path = train_fold(args.store, args.folds, repeat, fold, args.variant, settings, args.out,
                      text_bank_file=args.text_bank)
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    log.info("trained model written to %s", path)


def cmd_evaluate(args) -> None:
    from smile_vlm.evaluate import evaluate_fold
    from smile_vlm.folds import fold_of, read_folds

    repeat, fold = fold_of(read_folds(args.folds), args.k)
    settings = _with_speed_options(args.settings, args)
    evaluate_fold(args.store, args.folds, repeat, fold, args.model, args.variant, settings, args.out,
                  train_store=args.train_store, text_bank_file=args.text_bank)


def cmd_text_bank(args) -> None:
    from smile_vlm.prompts import write_text_bank

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


def cmd_final_model(args) -> None:
    from smile_vlm.final import train_final

    settings = _with_speed_options(args.settings, args)
    train_final(args.store, args.folds, args.variant, settings, args.out, text_bank_file=args.text_bank)


def register(sub) -> None:
    """Add this module's subcommands to the ``smile-vlm`` parser."""
    p = sub.add_parser("folds", help="subject-independent folds of an experiment")
    p.add_argument("--store", required=True, help="Zarr store the experiment evaluates")
    p.add_argument("--protocol", type=json_arg, required=True, help="the experiment's protocol and classes, JSON")
    p.add_argument("--out", required=True, help="folds CSV to write")
    p.add_argument("--train-store", default=None,
                   help="store trained on, when it differs from --store (split: cross)")
    p.set_defaults(func=cmd_folds)

    p = sub.add_parser("train", help="train one fold (resumes from its checkpoint; torchrun -m smile_vlm train for DDP)")
    p.add_argument("--store", required=True, help="Zarr store trained on")
    p.add_argument("--folds", required=True, help="folds CSV from `smile-vlm folds`")
    p.add_argument("--k", type=int, required=True, help="job number of the folds table")
    p.add_argument("--variant", type=json_arg, default={}, help='model variant, JSON, e.g. {"model": "smile_vlm"}')
    p.add_argument("--settings", type=json_arg, default={}, help="sections train, prompts, encoders, classes, protocol, JSON")
    p.add_argument("--out", required=True, help="run folder: checkpoint, log, model.pt")
    _add_run_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="zero-shot and linear-probe metrics of one fold")
    p.add_argument("--store", required=True, help="Zarr store evaluated")
    p.add_argument("--folds", required=True, help="folds CSV from `smile-vlm folds`")
    p.add_argument("--k", type=int, required=True, help="job number (row k) of the folds table")
    p.add_argument("--model", required=True, help="model.pt of the trained fold")
    p.add_argument("--variant", type=json_arg, required=True, help="the model variant's settings, JSON")
    p.add_argument("--settings", type=json_arg, required=True, help=SETTINGS_HELP)
    p.add_argument("--out", required=True, help="evaluation JSON to write")
    p.add_argument("--train-store", default=None,
                   help="store trained on, when it differs from --store (split: cross)")
    _add_run_options(p, workers=False)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("text-bank", help="embed every prompt once with the frozen text encoder")
    p.add_argument("--settings", type=json_arg, required=True, help="sections encoders and prompts, JSON")
    p.add_argument("--out", required=True, help="text bank file (.pt)")
    p.set_defaults(func=cmd_text_bank)

    p = sub.add_parser("pretrain", help="FACS-captioned pretraining of the vision encoder on generated faces")
    p.add_argument("--settings", type=json_arg, default={}, help="sections pretrain, render and encoders, JSON")
    p.add_argument("--out", required=True, help="vision.pt to write (corpus.npz and checkpoint.pt go beside it)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (speed only)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("final-model", help="train an experiment's deployable model on every subject of its protocol")
    p.add_argument("--store", required=True, help="Zarr store trained on")
    p.add_argument("--folds", required=True, help="the experiment's folds CSV (which subjects the protocol uses)")
    p.add_argument("--variant", type=json_arg, required=True, help="the model variant's settings, JSON")
    p.add_argument("--settings", type=json_arg, required=True, help=SETTINGS_HELP)
    p.add_argument("--out", required=True, help="folder: model.pt, and run/ with the resumable checkpoint")
    _add_run_options(p)
    p.set_defaults(func=cmd_final_model)
