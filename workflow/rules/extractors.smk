# Baseline feature extractors (BoT ResNet-18...152, MGN): one training job per (dataset, extractor), on one GPU.


rule train_extractor:
    input:
        manifest=manifest_path("{dataset}"),
    output:
        model=model_path("{dataset}", "{extractor}"),
    log:
        f"{LOGS}/train_extractor/{{dataset}}/{{extractor}}.log",
    conda:
        CONDA_ENV
    threads: 4
    resources:
        gpu=1,
    params:
        config=RESOLVED_CONFIG,
        out_dir=lambda wildcards, output: Path(output.model).parent,
        seed=EXTRACTOR_SEED,
        config_digest=lambda wildcards: config_digest(config["extractors"][wildcards.extractor]),
        tracking=lambda wildcards: tracking_args(f"{wildcards.dataset}/{wildcards.extractor}"),
    shell:
        "havana train-extractor --manifest {input.manifest} --config {params.config} "
        "--extractor {wildcards.extractor} --out {params.out_dir} --seed {params.seed} {params.tracking} > {log} 2>&1"
