# Features: each trained extractor embeds its dataset once (train: V views; query/gallery: plain + flipped); every
# head and the baseline evaluation then read this one HDF5 file.


rule extract_features:
    input:
        manifest=LAYOUT.manifest("{dataset}"),
        model=lambda wildcards: LAYOUT.model(wildcards.dataset, layout.model_source(config, wildcards.extractor)),
    output:
        features=LAYOUT.features("{dataset}", "{extractor}"),
    log:
        LAYOUT.log("extract_features/{dataset}/{extractor}"),
    conda:
        CONDA_ENV
    threads: 4
    resources:
        gpu=1,
    params:
        config=job_config("extract_features"),
    shell:
        "havana extract --manifest {input.manifest} --model {input.model} --config {params.config} "
        "--extractor {wildcards.extractor} --dataset {wildcards.dataset} --out {output.features} > {log} 2>&1"
