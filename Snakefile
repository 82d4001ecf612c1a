# HAVANA reproduction workflow: wiring only. Rules live in workflow/rules/*.smk, input functions and targets in
# workflow/rules/common.smk, the config schema in workflow/schemas/config.schema.yaml.
#
#   snakemake all --cores 8 --resources gpu=2                      # the paper (config/config.yaml)
#   snakemake all --cores 2 --configfile config/demo.yaml          # the synthetic demo on CPU
#   snakemake all --workflow-profile profiles/slurm                # a SLURM cluster
#
# Targets go first (or leave them out: `all` is the default): --resources, --config, --configfile and --set-resources
# take several values, so snakemake's parser reads a target after them as one more value and fails.
# profiles/default (local settings) applies by itself; a --workflow-profile replaces it.
# `--configfile FILE` REPLACES config/config.yaml rather than merging into it, so a config never inherits another's
# datasets or targets; `--config key=value` overrides single keys of whichever config is active.

import re
from pathlib import Path

from snakemake.utils import min_version, validate

from havana.config import with_defaults

min_version("9.0")


if not workflow.overwrite_configfiles:

    configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


# A config's `defaults:` (e.g. config/rows.yaml, the ablation rows) merged under it, as `havana` commands load it.
CONFIG_FOLDER = Path((workflow.overwrite_configfiles or [Path(workflow.basedir) / "config" / "config.yaml"])[-1]).parent
config.update(with_defaults(dict(config), CONFIG_FOLDER))
config.pop("defaults", None)


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="|".join(map(re.escape, config["datasets"])),
    extractor="|".join(map(re.escape, config["extractors"])),
    row=r"[^/]+",
    seed=r"\d+",


include: "workflow/rules/data.smk"
include: "workflow/rules/extractors.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/heads.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
