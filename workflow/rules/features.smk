# Features: each trained extractor embeds its dataset once (train: V views; query/gallery: plain + flipped); every
# head and the baseline evaluation then read this one HDF5 file. An entry with `features: FILE` imports that file
# instead (checked against the dataset's manifest), with no training and no extraction.


rule extract_features:
    input:
        manifest=LAYOUT.manifest("{dataset}"),
        model=lambda wildcards: LAYOUT.model(wildcards.dataset, layout.model_source(config, wildcards.extractor)),
    output:
        features=LAYOUT.features("{dataset}", "{extractor}"),
    log:
        LAYOUT.log("extract_features/{dataset}/{extractor}"),
    benchmark:
        LAYOUT.benchmark("extract_features/{dataset}/{extractor}")
    wildcard_constraints:
        extractor=f"(?!(?:{names_pattern('features')})$).+",
    conda:
        CONDA_ENV
    threads: EXTRACTOR_THREADS
    resources:
        gpu=1,
    params:
        config=job_config("extract_features"),
    shell:
        "havana extract --manifest {input.manifest} --model {input.model} --config {params.config} "
        "--extractor {wildcards.extractor} --dataset {wildcards.dataset} --out {output.features} > {log} 2>&1"


rule import_features:
    input:
        manifest=LAYOUT.manifest("{dataset}"),
        source=lambda wildcards: extractor_entry(wildcards).features,
    output:
        features=LAYOUT.features("{dataset}", "{extractor}"),
    log:
        LAYOUT.log("import_features/{dataset}/{extractor}"),
    benchmark:
        LAYOUT.benchmark("import_features/{dataset}/{extractor}")
    wildcard_constraints:
        extractor=names_pattern("features"),
    priority: 2  # seconds of conversion that unlock a chain of jobs: run them first, not at the DAG's end
    conda:
        CONDA_ENV
    shell:
        "havana import-features --source {input.source} --manifest {input.manifest} --dataset {wildcards.dataset} "
        "--extractor {wildcards.extractor} --out {output.features} > {log} 2>&1"


rule export_features:
    input:
        features=LAYOUT.features("{dataset}", "{extractor}"),
    output:
        npz=LAYOUT.exported_features("{dataset}", "{extractor}"),
    log:
        LAYOUT.log("export_features/{dataset}/{extractor}"),
    benchmark:
        LAYOUT.benchmark("export_features/{dataset}/{extractor}")
    priority: 2  # seconds of conversion that unlock a chain of jobs: run them first, not at the DAG's end
    conda:
        CONDA_ENV
    shell:
        "havana export-features --features {input.features} --out {output.npz} > {log} 2>&1"
