# Evaluation: one metrics JSON per (dataset, extractor, head row, seed). The row `baseline` is the raw extractor
# features evaluated with no head, through this same rule, so every table compares like with like.


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        metrics=metrics_path("{dataset}", "{extractor}", "{head}", "{seed}"),
    log:
        f"{LOGS}/evaluate/{{dataset}}/{{extractor}}/{{head}}/seed{{seed}}.log",
    conda:
        CONDA_ENV
    threads: 1
    params:
        config=RESOLVED_CONFIG,
        head=lambda wildcards, input: f"--head {input.head}" if "head" in input.keys() else "",
        config_digest=lambda wildcards: config_digest(config["evaluation"]),
        tracking=lambda wildcards: tracking_args(
            f"evaluate/{wildcards.dataset}/{wildcards.extractor}/{wildcards.head}/seed{wildcards.seed}"
        ),
    shell:
        "havana evaluate --features {input.features} {params.head} --config {params.config} "
        "--out {output.metrics} {params.tracking} > {log} 2>&1"
