# ---- render: one job per subject, multiview PNGs (dynamic images for 4D sequences) -----------


rule render:
    input:
        manifest="results/{dataset}/manifest.csv",
    output:
        "results/{dataset}/views/{subject}/index.csv",
    params:
        out_dir=lambda w: f"results/{w.dataset}/views/{w.subject}",
        settings=as_json(jobs.result_settings(config, "render")),
    threads: lambda w: config["render"]["threads"]
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        "logs/render/{dataset}/{subject}.log",
    benchmark:
        "logs/benchmarks/render/{dataset}/{subject}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    message:
        "Rendering {wildcards.dataset} subject {wildcards.subject}"
    shell:
        "{SMILE_VLM} render --manifest {input.manifest} --dataset {wildcards.dataset}"
        " --subject {wildcards.subject:q} --out {params.out_dir:q}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"
