# HAVANA heads: one training job per (dataset, extractor, ablation row, seed) on the extracted features.


rule train_head:
    input:
        features=features_path("{dataset}", "{extractor}"),
    output:
        head=f"{head_dir('{dataset}', '{extractor}', '{row}', '{seed}')}/head.pt",
        history=f"{head_dir('{dataset}', '{extractor}', '{row}', '{seed}')}/history.csv",
    log:
        f"{LOGS}/train_head/{{dataset}}/{{extractor}}/{{row}}/seed{{seed}}.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
    params:
        config=RESOLVED_CONFIG,
        out_dir=lambda wildcards, output: Path(output.head).parent,
        config_digest=head_settings,
        tracking=lambda wildcards: tracking_args(
            f"{wildcards.dataset}/{wildcards.extractor}/{wildcards.row}/seed{wildcards.seed}"
        ),
    shell:
        "havana train-head --features {input.features} --row {wildcards.row} --config {params.config} "
        "--dataset {wildcards.dataset} --out {params.out_dir} --seed {wildcards.seed} {params.tracking} > {log} 2>&1"
