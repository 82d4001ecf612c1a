# Baseline feature extractors (BoT ResNet-18...152, MGN): one training job per (dataset, extractor), on one GPU.


rule train_extractor:
    input:
        manifest=LAYOUT.manifest("{dataset}"),
    output:
        model=LAYOUT.model("{dataset}", "{extractor}"),
    log:
        LAYOUT.log("train_extractor/{dataset}/{extractor}"),
    conda:
        CONDA_ENV
    threads: 4
    resources:
        gpu=1,
    params:
        config=job_config("train_extractor"),
        out_dir=lambda wildcards, output: Path(output.model).parent,
        seed=EXTRACTOR_SEED,
        tracking=lambda wildcards: tracking_args(run_name("extractor", None, wildcards.extractor, wildcards.dataset)),
    shell:
        "havana train-extractor --manifest {input.manifest} --config {params.config} "
        "--extractor {wildcards.extractor} --out {params.out_dir} --seed {params.seed} {params.tracking} > {log} 2>&1"
