# Tables 2-6, the reproduction summary and Figures 5-9: one rule per configured table (named after it: table2 ...
# table6, so `snakemake table3` builds one table) and per figure (fig5 ... fig9), plus the `figures` target. Every
# output is wrapped in report() with its caption from workflow/report/ for `snakemake --report`.


for _table, _rule in [(name, name) for name in PAPER_TABLES] + [("summary", "reproduction_summary")]:

    rule:
        name:
            _rule
        input:
            table_inputs(_table),
        output:
            **table_outputs(_table),
        log:
            f"{LOGS}/tables/{_table}.log",
        localrule: True
        conda:
            CONDA_ENV
        params:
            config=RESOLVED_CONFIG,
            table=_table,
            results=lambda wildcards, output: Path(output.md).parents[1],
            prefix=lambda wildcards, output: output.md[: -len(".md")],
            config_digest=config_digest(config["tables"], SEEDS, ACTIVE_DATASETS),
        shell:
            "havana table --config {params.config} --table {params.table} --results-dir {params.results} "
            "--out-prefix {params.prefix} > {log} 2>&1"


for _figure in config["figures"]:

    rule:
        name:
            _figure
        input:
            figure_inputs(_figure),
        output:
            report(
                figure_path(_figure),
                caption=f"../report/{_figure}.rst",
                category="Figures",
                labels={"figure": _figure},
            ),
        log:
            f"{LOGS}/figures/{_figure}.log",
        localrule: True
        conda:
            CONDA_ENV
        params:
            config=RESOLVED_CONFIG,
            figure=_figure,
            results=lambda wildcards, output: Path(output[0]).parents[1],
            resources=lambda wildcards: RESOURCES,  # images are read from here (not declared: thousands of files)
            config_digest=config_digest(config["figures"][_figure], SEEDS, ACTIVE_DATASETS),
        shell:
            "havana figure --config {params.config} --figure {params.figure} --results-dir {params.results} "
            "--resources-dir {params.resources} --out {output} > {log} 2>&1"


rule figures:
    input:
        figure_targets(),
    localrule: True
