# Evaluation: one metrics JSON per (dataset, extractor, head row, seed). The row `baseline` is the raw extractor
# features evaluated with no head, through this same rule, so every table compares like with like.


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        metrics=LAYOUT.metrics("{dataset}", "{extractor}", "{row}", "{seed}"),
    log:
        LAYOUT.log("evaluate/{dataset}/{extractor}/{row}/seed{seed}"),
    conda:
        CONDA_ENV
    threads: 1
    params:
        config=job_config("evaluate"),
        head=lambda wildcards, input: f"--head {input.head}" if "head" in input.keys() else "",
        tracking=lambda wildcards: tracking_args(
            run_name(wildcards.row, wildcards.seed, wildcards.extractor, wildcards.dataset)
        ),
    shell:
        "havana evaluate --features {input.features} {params.head} --config {params.config} "
        "--out {output.metrics} --row {wildcards.row} --seed {wildcards.seed} {params.tracking} > {log} 2>&1"
