# ---- index: raw dataset root -> manifest (one row per scan or frame) + rejects ----------------


checkpoint index:
    input:
        index_input,
    output:
        manifest="results/{dataset}/manifest.csv",
        rejects="results/{dataset}/rejects.csv",
        skipped="results/{dataset}/skipped.csv",  # written by `index` beside rejects.csv
    params:
        root=lambda w: config["datasets"][w.dataset]["root"],
        settings=lambda w: as_json(jobs.index_settings(config, w.dataset)),
    threads: index_threads
    log:
        "logs/index/{dataset}.log",
    benchmark:
        "logs/benchmarks/index/{dataset}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    message:
        "Indexing raw {wildcards.dataset} scans under {params.root}"
    shell:
        "{SMILE_VLM} index --dataset {wildcards.dataset} --root {params.root:q}"
        " --settings {params.settings:q} --workers {threads} --manifest {output.manifest}"
        " --rejects {output.rejects} > {log} 2>&1"
