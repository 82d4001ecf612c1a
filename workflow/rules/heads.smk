# HAVANA heads: one training job per (dataset, extractor, ablation row, seed) on the extracted features.


rule train_head:
    input:
        features=LAYOUT.features("{dataset}", "{extractor}"),
    output:
        head=LAYOUT.head_file("{dataset}", "{extractor}", "{row}", "{seed}", "head"),
        history=LAYOUT.head_file("{dataset}", "{extractor}", "{row}", "{seed}", "history"),
    log:
        LAYOUT.log("train_head/{dataset}/{extractor}/{row}/seed{seed}"),
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
    params:
        config=job_config("train_head"),
        out_dir=lambda wildcards, output: Path(output.head).parent,
        tracking=lambda wildcards: tracking_args(
            run_name(wildcards.row, wildcards.seed, wildcards.extractor, wildcards.dataset)
        ),
    shell:
        "havana train-head --features {input.features} --row {wildcards.row} --config {params.config} "
        "--dataset {wildcards.dataset} --out {params.out_dir} --seed {wildcards.seed} {params.tracking} > {log} 2>&1"
