# Evaluation: one job per (dataset, extractor, head row) writes the metrics JSON of every seed: one interpreter and one
# read of the features for all of them (havana evaluate --out one per seed). The row `baseline` is the raw extractor
# features evaluated with no head, through this same rule (scored once, a copy per seed), so every table compares like
# with like.


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        metrics=[LAYOUT.metrics("{dataset}", "{extractor}", "{row}", seed) for seed in SEEDS],
    log:
        LAYOUT.log("evaluate/{dataset}/{extractor}/{row}"),
    benchmark:
        LAYOUT.benchmark("evaluate/{dataset}/{extractor}/{row}")
    priority: 1  # scored as soon as its heads exist, between head jobs, not all at the DAG's end
    conda:
        CONDA_ENV
    threads: 1
    params:
        config=job_config("evaluate"),
        heads=lambda wildcards, input: f"--head {' '.join(input.heads)}" if "heads" in input.keys() else "",
        seeds=" ".join(str(seed) for seed in SEEDS),
        tracking=lambda wildcards: tracking_args(
            *(run_name(wildcards.row, seed, wildcards.extractor, wildcards.dataset) for seed in SEEDS)
        ),
    shell:
        "havana evaluate --features {input.features} {params.heads} --config {params.config} "
        "--out {output.metrics} --row {wildcards.row} --seeds {params.seeds} {params.tracking} > {log} 2>&1"
