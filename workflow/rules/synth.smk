# ---- synthetic raw data: the embedded default, written in each dataset's own raw format ----


rule synth:
    output:
        f"{config['synthetic']['root']}/{{dataset}}/SYNTHETIC.json",
    params:
        root=lambda w: jobs.synthetic_root(config, w.dataset),
        settings=as_json(jobs.synth_settings(config)),
    threads: all_cores
    log:
        "logs/synth/{dataset}.log",
    benchmark:
        "logs/benchmarks/synth/{dataset}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    message:
        "Writing synthetic {wildcards.dataset} scans in the dataset's raw format"
    shell:
        "{SMILE_VLM} synth --dataset {wildcards.dataset} --root {params.root:q}"
        " --settings {params.settings:q} --workers {threads} > {log} 2>&1"
