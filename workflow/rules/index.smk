# ---- index: raw dataset root -> manifest (one row per scan or frame) + rejects ----------------


checkpoint index:
    input:
        lambda w: raw_input(w.dataset),
    output:
        manifest="results/{dataset}/manifest.csv",
        rejects="results/{dataset}/rejects.csv",
    params:
        root=lambda w: dataset_root(w.dataset),
        settings=lambda w: as_json(index_settings(w.dataset)),
    threads: lambda w: config["index"]["workers"]
    log:
        "logs/index/{dataset}.log",
    conda:
        "../../envs/preprocess.yaml"
    message:
        "Indexing raw {wildcards.dataset} scans under {params.root}"
    shell:
        "{SMILE_VLM} index --dataset {wildcards.dataset} --root {params.root:q}"
        " --settings {params.settings:q} --manifest {output.manifest}"
        " --rejects {output.rejects} > {log} 2>&1"
