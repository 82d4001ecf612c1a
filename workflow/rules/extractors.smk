# Baseline feature extractors (BoT ResNet-18...152, MGN): one training job per (dataset, extractor), on one GPU; an
# entry with `import: {format, checkpoint}` converts a checkpoint trained elsewhere into the same model.pt instead.


rule train_extractor:
    input:
        manifest=LAYOUT.manifest("{dataset}"),
    output:
        model=LAYOUT.model("{dataset}", "{extractor}"),
    log:
        LAYOUT.log("train_extractor/{dataset}/{extractor}"),
    benchmark:
        LAYOUT.benchmark("train_extractor/{dataset}/{extractor}")
    wildcard_constraints:
        extractor=names_pattern("train"),
    conda:
        CONDA_ENV
    threads: EXTRACTOR_THREADS
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


rule import_extractor:
    input:
        checkpoint=lambda wildcards: extractor_entry(wildcards).import_.checkpoint,
    output:
        model=LAYOUT.model("{dataset}", "{extractor}"),
    log:
        LAYOUT.log("import_extractor/{dataset}/{extractor}"),
    benchmark:
        LAYOUT.benchmark("import_extractor/{dataset}/{extractor}")
    wildcard_constraints:
        extractor=names_pattern("import"),
    priority: 2  # seconds of conversion that unlock a chain of jobs: run them first, not at the DAG's end
    conda:
        CONDA_ENV
    params:
        source=import_args,
    shell:
        "havana import-extractor {params.source} --out {output.model} > {log} 2>&1"


rule export_extractor:
    input:
        model=LAYOUT.model("{dataset}", "{extractor}"),
    output:
        checkpoint=LAYOUT.exported_model("{dataset}", "{extractor}", "{format}"),
    log:
        LAYOUT.log("export_extractor/{dataset}/{extractor}.{format}"),
    benchmark:
        LAYOUT.benchmark("export_extractor/{dataset}/{extractor}.{format}")
    priority: 2  # seconds of conversion that unlock a chain of jobs: run them first, not at the DAG's end
    conda:
        CONDA_ENV
    shell:
        "havana export-extractor --model {input.model} --format {wildcards.format} --out {output.checkpoint} > {log} 2>&1"
