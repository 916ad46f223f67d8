# smile-vlm: raw 3D/4D face scans -> multiview renders and dynamic images -> Zarr stores
#            -> SMILE-VLM / FACET-VLM per subject-independent fold -> zero-shot tables and figures.
#
#   snakemake --cores 8 results/tables/bu4dfe.csv        # one paper table
#   snakemake --cores 8                                   # everything (rule all)
#   snakemake --profile profiles/slurm results/tables/bu4dfe.csv
#
# Logic lives in the smile_vlm library; each rule calls one `smile-vlm` CLI command.
from snakemake.utils import min_version, validate

from smile_vlm.configcheck import refuse, schema_problems

min_version("9.0")


configfile: "config.yaml"


# Every schema violation at once, one line each; then Snakemake's validation fills in defaults.
refuse(schema_problems(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml"))
validate(config, "workflow/schemas/config.schema.yaml", set_default=True)


include: "workflow/rules/common.smk"


# Cross-references the schema cannot see (datasets, classes, variants, prompts): one line per
# problem, before any rule reads the config. Dataset roots are checked once the targets are known.
check_config()


include: "workflow/rules/synth.smk"
include: "workflow/rules/index.smk"
include: "workflow/rules/render.smk"
include: "workflow/rules/store.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/final.smk"
include: "workflow/rules/predict.smk"


rule all:
    default_target: True
    input:
        jobs.all_targets(config),
