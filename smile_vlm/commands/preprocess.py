"""Preprocessing commands: synthetic data, index, render, pack, contact sheet."""

from __future__ import annotations

from pathlib import Path

from smile_vlm.commands import SETTINGS_HELP, dataset_names, json_arg, log, positive_int


def cmd_synth(args) -> None:
    from smile_vlm.atomic import atomic_path
    from smile_vlm.synth import generate

    # Written beside the root and renamed onto it: a rerun with other settings never leaves
    # stale scans of an earlier run behind, and a killed run leaves no SYNTHETIC.json.
    with atomic_path(args.root) as tmp:
        tmp.mkdir()
        summary = generate(args.dataset, tmp, args.settings, workers=args.workers)
    log.info("synthetic %s: %d samples written to %s", args.dataset, len(summary.get("samples", [])), args.root)


def cmd_index(args) -> None:
    from smile_vlm.index import write_index

    settings = dict(args.settings)
    if args.workers is not None:
        settings["workers"] = args.workers
    write_index(args.dataset, Path(args.root), settings, args.manifest, args.rejects)


def cmd_render(args) -> None:
    from smile_vlm.render import render_shard
    from smile_vlm.settings import complete

    settings = complete("render", args.settings)
    if args.threads is not None:
        settings["threads"] = args.threads
    render_shard(args.manifest, args.dataset, args.subject, Path(args.out), settings)


def cmd_pack(args) -> None:
    from smile_vlm.store import pack_store

    pack_store(args.manifest, args.shards, Path(args.out), args.dataset, args.settings)


def cmd_contact_sheet(args) -> None:
    from smile_vlm.figures import contact_sheet

    contact_sheet(args.store, args.out)


def register(sub) -> None:
    """Add this module's subcommands to the ``smile-vlm`` parser."""
    datasets = dataset_names()
    p = sub.add_parser("synth", help="write a synthetic dataset in its raw format")
    p.add_argument("--dataset", required=True, choices=datasets, help="dataset whose raw format is written")
    p.add_argument("--root", required=True, help="folder to (re)create")
    p.add_argument("--settings", type=json_arg, default={}, help="the config's synthetic section, JSON")
    p.add_argument("--workers", type=positive_int, default=1, help="processes writing subjects (speed only)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("index", help="raw dataset root -> manifest.csv + rejects.csv")
    p.add_argument("--dataset", required=True, choices=datasets, help="which dataset's layout to read")
    p.add_argument("--root", required=True, help="raw dataset folder, as distributed")
    p.add_argument("--settings", type=json_arg, default={}, help=SETTINGS_HELP)
    p.add_argument("--workers", type=positive_int, default=None,
                   help="processes checking meshes (speed only; default: settings' workers)")
    p.add_argument("--manifest", required=True, help="manifest CSV to write")
    p.add_argument("--rejects", required=True, help="rejects CSV to write (file and reason)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("render", help="render one subject's samples to multiview PNGs")
    p.add_argument("--manifest", required=True, help="manifest CSV from `smile-vlm index`")
    p.add_argument("--dataset", required=True, choices=datasets, help="dataset of the manifest")
    p.add_argument("--subject", required=True, help="subject id as written in the manifest")
    p.add_argument("--out", required=True, help="shard folder; index.csv is written last")
    p.add_argument("--settings", type=json_arg, default={}, help="the config's render section, JSON")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="llvmpipe rasteriser threads (speed only; default: settings' threads)")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("pack", help="render shards -> one Zarr store")
    p.add_argument("--manifest", required=True, help="manifest CSV from `smile-vlm index`")
    p.add_argument("--dataset", required=True, choices=datasets, help="dataset of the manifest")
    p.add_argument("--out", required=True, help="Zarr store folder to write")
    p.add_argument("--settings", type=json_arg, default={}, help=SETTINGS_HELP)
    p.add_argument("--shards", nargs="+", required=True, help="shard index.csv files")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("contact-sheet", help="a grid of rendered samples per class")
    p.add_argument("--store", required=True, help="Zarr store from `smile-vlm pack`")
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=cmd_contact_sheet)
