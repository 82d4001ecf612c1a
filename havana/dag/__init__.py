"""The workflow as the library sees it: what each Snakemake job reads and receives (jobs), and what a run will cost
(plan, costs)."""
