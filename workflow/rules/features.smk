# Features: each trained extractor embeds its dataset once (train: V views; query/gallery: plain + flipped); every
# head and the baseline evaluation then read this one HDF5 file.


rule extract_features:
    input:
        manifest=manifest_path("{dataset}"),
        model=lambda wildcards: model_path(wildcards.dataset, model_source(wildcards.extractor)),
    output:
        features=features_path("{dataset}", "{extractor}"),
    log:
        f"{LOGS}/extract_features/{{dataset}}/{{extractor}}.log",
    conda:
        CONDA_ENV
    threads: 4
    resources:
        gpu=1,
    params:
        config=RESOLVED_CONFIG,
        config_digest=lambda wildcards: config_digest(config["extractors"][wildcards.extractor]),
    shell:
        "havana extract --manifest {input.manifest} --model {input.model} --config {params.config} "
        "--extractor {wildcards.extractor} --dataset {wildcards.dataset} --out {output.features} > {log} 2>&1"
