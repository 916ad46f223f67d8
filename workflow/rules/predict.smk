# ---- predict: a trained model on a folder of the user's own scans (config `predict:`), one job
#      per subject folder, then one table of every prediction


rule predict:
    input:
        model=lambda w: predict_setting("model"),
        scans=lambda w: f"{predict_setting('inputs')}/{w.subject}",
    output:
        csv="results/predict/{subject}.csv",
        json="results/predict/{subject}.json",
    params:
        options=lambda w: jobs.predict_options(config),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "logs/predict/{subject}.log",
    benchmark:
        "logs/benchmarks/predict/{subject}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    message:
        "Predicting the expressions of {input.scans}"
    shell:
        "{SMILE_VLM} predict --model {input.model:q} {input.scans:q} --out {output.csv} --json {output.json}"
        " {params.options} --threads {threads} > {log} 2>&1"


rule predictions:
    input:
        lambda w: expand("results/predict/{subject}.csv", subject=predict_subjects()),
    output:
        "results/predict/predictions.csv",
    log:
        "logs/predict/predictions.log",
    benchmark:
        "logs/benchmarks/predictions/predictions.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    shell:
        "{SMILE_VLM} merge-predictions --out {output} --inputs {input} > {log} 2>&1"
