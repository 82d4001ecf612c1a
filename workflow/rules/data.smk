# Datasets: render the synthetic one (demo), then prepare any dataset from its archive into <resources>/<ds>/ with a
# manifest. The archive is a param, not an input: a missing archive must fail here, in `prepare`, with the message
# saying where to obtain it and where to put it, not as a missing-input error deep in the DAG.


rule synthesize:
    output:
        directory(LAYOUT.synthetic_archive("synthetic")),
    log:
        LAYOUT.log("synthesize/synthetic"),
    benchmark:
        LAYOUT.benchmark("synthesize/synthetic")
    conda:
        CONDA_ENV
    params:
        options=synth_args,
    shell:
        "havana synth --out {output} {params.options} > {log} 2>&1"


rule prepare:
    input:
        prepare_inputs,
    output:
        LAYOUT.manifest("{dataset}"),
    log:
        LAYOUT.log("prepare/{dataset}"),
    benchmark:
        LAYOUT.benchmark("prepare/{dataset}")
    conda:
        CONDA_ENV
    params:
        source=prepare_source,
        root=lambda wildcards: LAYOUT.resources,
    shell:
        # tee: the one-sentence reason a dataset cannot be prepared (e.g. its archive is absent) reaches the terminal
        "havana prepare {wildcards.dataset} --root {params.root:q} {params.source} 2>&1 | tee {log:q}"
