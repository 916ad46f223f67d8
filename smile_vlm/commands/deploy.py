"""Applying a trained model to new scans: predict, and merging per-subject predictions."""

from __future__ import annotations

from smile_vlm.commands import log, positive_int, unit_interval
from smile_vlm.errors import ScanError
from smile_vlm.settings import DEFAULT_PREDICT, PREDICT_KINDS


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
                            echo=echo, wise_alpha=args.wise_alpha)
    failed = [record for record in records if record["status"] != "ok"]
    if failed and len(failed) == len(records):
        raise ScanError(failed[0]["input"], f"no sample could be predicted; first reason: {failed[0]['error']}")
    if failed:
        log.warning("%d of %d samples could not be predicted (status 'error' in the output)", len(failed), len(records))


def cmd_merge_predictions(args) -> None:
    from smile_vlm.predict import merge_predictions

    merge_predictions(args.inputs, args.out)


def register(sub) -> None:
    """Add this module's subcommands to the ``smile-vlm`` parser."""
    p = sub.add_parser("predict", help="expression probabilities of raw scans or 4D sequences with a trained model",
                       description="Render every input exactly as the model's training store was rendered "
                                   "(settings read from the checkpoint) and score it against the class prompts.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="scan file (.wrl .obj .bnt .ply), 4D sequence folder, or a folder of either")
    p.add_argument("--model", required=True, help="model.pt (results/<experiment>/final/<variant>/model.pt), or a "
                   "pretraining's vision.pt (results/pretrain/<name>/vision.pt; name the --classes)")
    p.add_argument("--out", default=None, help="CSV to write: p_<class>, top_class, w_<view>, frames per input")
    p.add_argument("--json", default=None, help="JSON to write with the same predictions")
    p.add_argument("--classes", default=None,
                   help="comma-separated class names for zero-shot scoring (default: the trained classes)")
    p.add_argument("--prompts", default=None,
                   help="prompt YAML file or name for the classes (default: the prompts trained with)")
    p.add_argument("--kind", choices=PREDICT_KINDS, default=DEFAULT_PREDICT["kind"],
                   help="what a folder of meshes is: auto follows the model (4D model: a sequence)")
    p.add_argument("--units", choices=("mm", "cm", "m"), default=None,
                   help="units of the input meshes when they differ from the training data's")
    p.add_argument("--wise-alpha", type=unit_interval, default=None, metavar="ALPHA",
                   help="WiSE-FT: mix a fold model with the pretraining it started from, (1 - ALPHA) * pretrained "
                        "+ ALPHA * fine-tuned (default: the variant's wise_alpha)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--batch-size", type=positive_int, default=32, help="samples per forward pass (speed only)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (speed only)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("merge-predictions", help="one table of the per-subject prediction CSVs of `predict`")
    p.add_argument("--out", required=True, help="CSV to write (a subject column, from each input's file name)")
    p.add_argument("--inputs", nargs="+", required=True, help="prediction CSVs of `smile-vlm predict --out`")
    p.set_defaults(func=cmd_merge_predictions)
