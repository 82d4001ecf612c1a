# Tables 2-6, the reproduction summary and Figures 5-9: one rule per configured table (named after it: table2 ...
# table6, so `snakemake table3` builds one table) and per figure (fig5 ... fig9), plus the `figures` target. Inputs
# are exactly the files the library reads (havana.jobs.table_reads / summary_reads / figure_reads). Every output is
# wrapped in report() with its caption from workflow/report/ for `snakemake --report`.


for _table in PAPER_TABLES:

    rule:
        name:
            _table
        input:
            declared(jobs.table_reads, config, _table),
        output:
            **table_outputs(_table),
        log:
            LAYOUT.log(f"tables/{_table}"),
        benchmark:
            LAYOUT.benchmark(f"tables/{_table}")
        localrule: True
        conda:
            CONDA_ENV
        params:
            config=declared(jobs.write_job_config, config, "table", name=_table),
            table=_table,
            prefix=lambda wildcards, output: output.md[: -len(".md")],
        shell:
            "havana table --config {params.config} --table {params.table} --out-prefix {params.prefix} > {log} 2>&1"


rule reproduction_summary:
    input:
        declared(jobs.summary_reads, config),
    output:
        **table_outputs(layout.SUMMARY),
    log:
        LAYOUT.log(f"tables/{layout.SUMMARY}"),
    benchmark:
        LAYOUT.benchmark(f"tables/{layout.SUMMARY}")
    localrule: True
    conda:
        CONDA_ENV
    params:
        config=declared(jobs.write_job_config, config, layout.SUMMARY),
        prefix=lambda wildcards, output: output.md[: -len(".md")],
    shell:
        "havana summary --config {params.config} --out-prefix {params.prefix} > {log} 2>&1"


for _figure in FIGURES:

    rule:
        name:
            _figure
        input:
            declared(jobs.figure_reads, config, _figure),
        output:
            report(
                LAYOUT.figure(_figure),
                caption=f"../report/{_figure}.rst",
                category=REPORT_CATEGORIES["figures"],
                labels={"figure": _figure},
            ),
        log:
            LAYOUT.log(f"figures/{_figure}"),
        benchmark:
            LAYOUT.benchmark(f"figures/{_figure}")
        localrule: True
        conda:
            CONDA_ENV
        params:
            config=declared(jobs.write_job_config, config, "figure", name=_figure),
            figure=_figure,
        shell:
            # Fig. 5 also shows dataset images, read from resources_dir (not declared: thousands of files)
            "havana figure --config {params.config} --figure {params.figure} --out {output} > {log} 2>&1"


rule figures:
    input:
        [LAYOUT.figure(name) for name in FIGURES],
    localrule: True
