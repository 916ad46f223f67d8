"""Reporting commands: tables, figures, the summary page, README results, model cards."""

from __future__ import annotations

from smile_vlm.commands import json_arg, log


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


def cmd_table(args) -> None:
    from smile_vlm.report import write_table

    write_table(args.experiment, args.evals, args.out)


def cmd_figure(args) -> None:
    from smile_vlm.figures import make_figure

    make_figure(args.kind, args.inputs, args.out, table_out=args.table_out, reference=args.reference)


def cmd_summary(args) -> None:
    from smile_vlm.summary import summary_markdown

    summary_markdown(args.tables, args.out, data_sources=args.data_sources)


def cmd_readme_results(args) -> None:
    from smile_vlm.summary import update_readme

    changed = update_readme(args.readme, args.tables, check=args.check)
    if args.check and changed:
        raise ValueError(f"{args.readme}: result blocks {', '.join(changed)} differ from their tables; "
                         f"run smile-vlm readme-results --tables {' '.join(args.tables)}")
    log.info("%s: %s", args.readme, f"rewrote blocks {', '.join(changed)}" if changed else "blocks up to date")


def cmd_model_card(args) -> None:
    from smile_vlm.final import write_model_card

    write_model_card(args.model, args.table, args.experiment, args.out)


def register(sub) -> None:
    """Add this module's subcommands to the ``smile-vlm`` parser."""
    p = sub.add_parser("table", help="one experiment's table from its per-fold evaluations")
    p.add_argument("--experiment", type=json_arg, required=True, help="the experiment's config entry, JSON")
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
    p.add_argument("--data-sources", type=json_arg, default=None,
                   help='JSON {table: "synthetic" | "real"} shown under each table')
    p.add_argument("--tables", nargs="+", required=True, help="table CSVs")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("readme-results", help="write tables' mean rows into a README's result blocks")
    p.add_argument("--tables", nargs="+", required=True,
                   help="table CSVs; each fills the block <!-- results:<CSV stem> start/end --> of the README")
    p.add_argument("--readme", default="README.md", help="markdown file with the marker lines (default: README.md)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 2 when a block differs from its table")
    p.set_defaults(func=cmd_readme_results)

    p = sub.add_parser("model-card", help="model_card.md of a deployable model, from its checkpoint and table")
    p.add_argument("--model", required=True, help="model.pt from `smile-vlm final-model`")
    p.add_argument("--table", required=True, help="the experiment's table CSV (cross-validated scores)")
    p.add_argument("--experiment", required=True, help="the experiment's name")
    p.add_argument("--out", required=True, help="markdown file to write")
    p.set_defaults(func=cmd_model_card)
