# ---- store: per-subject shards -> one Zarr store per dataset; a contact sheet to look at -----


rule pack:
    input:
        manifest="results/{dataset}/manifest.csv",
        shards=shard_indexes,
    output:
        store=directory("results/{dataset}/store.zarr"),
        missing="results/{dataset}/store_missing.csv",
    params:
        settings=lambda w: as_json(jobs.pack_settings(config, w.dataset)),
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "logs/pack/{dataset}.log",
    benchmark:
        "logs/benchmarks/pack/{dataset}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    message:
        "Packing {wildcards.dataset} renders into a Zarr store"
    shell:
        "{SMILE_VLM} pack --manifest {input.manifest} --dataset {wildcards.dataset}"
        " --out {output.store} --settings {params.settings:q} --shards {input.shards} > {log} 2>&1"


rule contact_sheet:
    input:
        "results/{dataset}/store.zarr",
    output:
        report(
            "results/{dataset}/figures/contact_sheet.png",
            caption="../report/contact_sheet.rst",
            category="Renders",
        ),
    log:
        "logs/contact_sheet/{dataset}.log",
    benchmark:
        "logs/benchmarks/contact_sheet/{dataset}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    shell:
        "{SMILE_VLM} contact-sheet --store {input} --out {output} > {log} 2>&1"
