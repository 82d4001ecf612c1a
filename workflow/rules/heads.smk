# HAVANA heads: one training job per (dataset, extractor, ablation row) that trains the row's head for every seed in
# `seeds`, stacked in one process on one GPU (havana.engine.train_head); each seed keeps its own folder, MLflow run and
# provenance, and equals the head it would give trained alone.


rule train_head:
    input:
        features=LAYOUT.features("{dataset}", "{extractor}"),
    output:
        heads=LAYOUT.head_files("{dataset}", "{extractor}", "{row}", SEEDS, "head"),
        histories=LAYOUT.head_files("{dataset}", "{extractor}", "{row}", SEEDS, "history"),
    log:
        LAYOUT.log("train_head/{dataset}/{extractor}/{row}"),
    benchmark:
        LAYOUT.benchmark("train_head/{dataset}/{extractor}/{row}")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
    params:
        config=job_config("train_head"),
        seeds=" ".join(str(seed) for seed in SEEDS),
        out_dirs=lambda wildcards, output: " ".join(shlex.quote(str(Path(head).parent)) for head in output.heads),
        tracking=lambda wildcards: tracking_args(
            *(run_name(wildcards.row, seed, wildcards.extractor, wildcards.dataset) for seed in SEEDS)
        ),
    shell:
        "havana train-head --features {input.features} --row {wildcards.row} --config {params.config} "
        "--dataset {wildcards.dataset} --out {params.out_dirs} --seeds {params.seeds} {params.tracking} > {log} 2>&1"
