# ---- pretraining: the vision encoder learns FACS captions of generated faces, once -------------
#      (results/pretrain/<name>/vision.pt; encoders.vision.init starts every fold from it)


rule pretrain:
    output:
        "results/pretrain/{pretrain}/vision.pt",
    wildcard_constraints:
        pretrain=_alternatives(jobs.pretrain_names(config)),
    params:
        settings=lambda w: as_json(jobs.pretrain_settings(config, w.pretrain)),
    threads: lambda w: config["pretrain"]["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    log:
        "logs/pretrain/{pretrain}.log",
    benchmark:
        "logs/benchmarks/pretrain/{pretrain}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    message:
        "Pretraining the vision encoder on FACS-captioned generated faces ({wildcards.pretrain})"
    shell:
        "{SMILE_VLM} pretrain --settings {params.settings:q} --out {output} --threads {threads} > {log} 2>&1"
