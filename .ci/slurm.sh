#!/usr/bin/env bash
# A real one-node SLURM cluster on localhost, and a slice of the demo DAG through profiles/slurm with the real
# snakemake-executor-plugin-slurm: synthesize -> prepare -> train_extractor -> extract_features -> train_head ->
# evaluate -> table2 (one seed). Asserts the table and that every non-local job went through sbatch on the partition
# profiles/slurm names for its rule (and with --gpus where the rule declares gpu).
#
#   bash .ci/slurm.sh            # as root: installs slurm-wlm and munge from Debian when missing
#
# The cluster has no accounting (no slurmdbd), as many small clusters: the executor's status command is squeue, which
# sees a finished job for MinJobAge seconds (>= 120 needed; 3600 here so that the checks below read every job back).
# GPUs are a GRES backed by /dev/null; jobs run on the CPU. The profile is profiles/slurm with what its header says to
# change on such a cluster (squeue status, no account) and on a small node (requests capped to this node's CPUs and
# memory: a request no node can satisfy would pend forever); partitions and everything else as shipped.
# Rerunning stops the daemons it started before and starts afresh. The cluster's config goes to /etc/slurm (the job
# steps' srun finds no other: the executor's job step drops SLURM_CONF from its environment); the script refuses to
# overwrite a slurm.conf it did not write.
# Environment: VENV (default .venv) provides snakemake and havana; HAVANA_SLURM_DIR (default /tmp/havana-slurm)
# holds the cluster's state and logs and the slice's working directory.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
VENV=${VENV:-$REPO/.venv}
STATE=${HAVANA_SLURM_DIR:-/tmp/havana-slurm}
export PATH="$VENV/bin:$PATH"
export SLURM_CONF=/etc/slurm/slurm.conf
MARKER="# written by havana-repro .ci/slurm.sh (a one-node test cluster); rerunning it rewrites this file"
started=$(date +%s)

say() { echo "[slurm.sh] $*"; }
die() { echo "[slurm.sh] FAILED: $*" >&2; exit 1; }

command -v snakemake >/dev/null || die "no snakemake in $VENV/bin; run 'make install' first or set VENV"

# --- packages ---------------------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed and this is not root: apt-get install slurm-wlm munge"
    say "installing slurm-wlm and munge from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
[ "$(id -u)" = 0 ] || die "the daemons run as root here (SlurmUser=root); run as root"

# --- stop what a previous run of this script started -------------------------------------------------------------
for daemon in slurmd slurmctld; do
    pidfile=$STATE/run/$daemon.pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        say "stopping the previous $daemon (pid $pid)"
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        ! kill -0 "$pid" 2>/dev/null || die "the previous $daemon (pid $pid) does not stop"
    fi
done
rm -rf "$STATE"/{run,log,spool,work,profile,slice.yaml}
mkdir -p "$STATE"/{run,log,spool/ctld,spool/d,work}

# --- munge ---------------------------------------------------------------------------------------------------------
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
    mkdir -p /run/munge && chown munge:munge /run/munge
    say "starting munged"
    runuser -u munge -- munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
fi
munge -n | unmunge >/dev/null || die "munge does not authenticate (munged not running?)"

# --- the cluster: one node, partitions cpu (default) and gpu, a GRES gpu backed by /dev/null --------------------------
cpus=$(nproc)
memory_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
if [ -e "$SLURM_CONF" ] && [ "$(head -1 "$SLURM_CONF")" != "$MARKER" ]; then
    die "$SLURM_CONF exists and was not written by this script; run it on a machine without a SLURM cluster"
fi
mkdir -p "$(dirname "$SLURM_CONF")"
cat > "$SLURM_CONF" <<EOF
$MARKER
ClusterName=havana-ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
MinJobAge=3600
ReturnToService=2
SchedulerType=sched/backfill
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
EOF
echo "NodeName=localhost Name=gpu File=/dev/null" > "$(dirname "$SLURM_CONF")/gres.conf"

say "starting slurmctld and slurmd ($cpus CPUs, $memory_mb MB)"
slurmctld -c -f "$SLURM_CONF"
slurmd -N localhost -f "$SLURM_CONF"
for _ in $(seq 100); do
    state=$(sinfo -h -N -n localhost -o '%T' 2>/dev/null | head -1 || true)
    [ "$state" = idle ] && break
    sleep 0.3
done
[ "$state" = idle ] || { tail -20 "$STATE"/log/*.log >&2; die "node localhost is '$state', not idle"; }
sinfo

# --- the profile, capped to this node ----------------------------------------------------------------------------------
python - "$REPO/profiles/slurm/config.yaml" "$STATE/profile/config.yaml" "$cpus" "$memory_mb" <<'EOF'
"""profiles/slurm with each rule's cpus_per_task and mem_mb capped to this node and squeue as status command (this
cluster has no accounting); every other setting, partitions included, as shipped."""
import sys
from pathlib import Path

import yaml

source, target, cpus, memory_mb = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
profile = yaml.safe_load(Path(source).read_text())
for resources in [profile["default-resources"], *profile["set-resources"].values()]:
    if "cpus_per_task" in resources:
        resources["cpus_per_task"] = min(resources["cpus_per_task"], cpus)
    if "mem_mb" in resources:
        resources["mem_mb"] = min(resources["mem_mb"], memory_mb // 2)
profile["slurm-status-command"] = "squeue"
profile["slurm-no-account"] = True  # no accounting: nothing to guess an account from
profile["slurm-init-seconds-before-status-checks"] = 5
profile["slurm-keep-successful-logs"] = True
profile["latency-wait"] = 5
profile["retries"] = 0
target.parent.mkdir(parents=True)
target.write_text(yaml.safe_dump(profile, sort_keys=False))
EOF

# --- the slice: config/demo.yaml, one seed, fewer epochs (the plumbing is under test here, not the learning) ------------
python - "$REPO/config/demo.yaml" "$STATE/slice.yaml" <<'EOF'
import sys
from pathlib import Path

import yaml

from havana.config import load_yaml

config = load_yaml(sys.argv[1])  # with its defaults (config/rows.yaml) merged in: the slice is a complete config
config["seeds"] = [0]
config["extractors"]["bot_r18"]["train"].update(epochs=2, warmup_epochs=1, milestones=[1])
config["heads"]["train"]["epochs"] = 3
Path(sys.argv[2]).write_text(yaml.safe_dump(config, sort_keys=False))
EOF
work=$STATE/work
say "running the demo slice through profiles/slurm in $work"
slice_started=$(date +%s)
snakemake table2 --snakefile "$REPO/Snakefile" --directory "$work" --workflow-profile "$STATE/profile" \
    --configfile "$STATE/slice.yaml" 2>&1 | tee "$STATE/log/snakemake.log"
slice_seconds=$(( $(date +%s) - slice_started ))

# --- assertions ------------------------------------------------------------------------------------------------------
python - "$REPO/profiles/slurm/config.yaml" "$work" "$STATE/log/snakemake.log" <<'EOF'
"""The table has its HAVANA rows (trained, flip test, and the two import paths) with numbers; each non-local job of the slice is a SLURM job with its rule in the
comment, on the partition profiles/slurm names for that rule, with --gpus where the rule declares gpu, COMPLETED."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

profile_path, work, log_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
profile = yaml.safe_load(Path(profile_path).read_text())
expected_rules = {"synthesize", "prepare", "train_extractor", "extract_features", "train_head", "evaluate",
                  "export_extractor", "import_extractor", "export_features", "import_features"}  # Table 2's import rows
gpu_rules = {"train_extractor", "extract_features", "train_head"}


def partition(rule):
    return profile["set-resources"].get(rule, {}).get("slurm_partition", profile["default-resources"]["slurm_partition"])


table = (work / "results/demo/tables/table2.md").read_text()
print(table)
rows = [line for line in table.splitlines() if line.startswith("| HAVANA")]
labels = {row.split("|")[1].strip() for row in rows}
assert {"HAVANA", "HAVANA †", "HAVANA, imported BoT checkpoint", "HAVANA, imported feature file"} <= labels, (
    f"table2.md lacks a HAVANA row:\n{table}"
)
assert all(re.search(r"\d+\.\d", row) and "n/a" not in row for row in rows), f"table2.md has no numbers:\n{table}"

jobs = {}
listing = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, check=True).stdout
for line in listing.splitlines():
    fields = dict(re.findall(r"(\w+)=(\S*)", line))
    rule = re.fullmatch(r"rule_(\w+?)(_wildcards_.*)?", fields.get("Comment", ""))
    assert rule, f"a SLURM job without the plugin's rule comment: {line}"
    jobs.setdefault(rule.group(1), []).append(fields)
submitted = set(re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", log_path.read_text()))
assert submitted == {f["JobId"] for fs in jobs.values() for f in fs}, (submitted, jobs)
assert set(jobs) == expected_rules, f"sbatch'd rules {sorted(jobs)} != {sorted(expected_rules)}"
for rule, fields_list in sorted(jobs.items()):
    for fields in fields_list:
        assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", (rule, fields)
        assert fields["Partition"] == partition(rule), f"{rule} ran on {fields['Partition']}, profile says {partition(rule)}"
        gres = fields.get("TresPerJob", "") + fields.get("TresPerNode", "")
        assert ("gpu" in gres) == (rule in gpu_rules), f"{rule}: GPU request {gres!r}"
        print(f"{rule:17} SLURM job {fields['JobId']:>3}  partition {fields['Partition']:4}  {gres or '-':11}  "
              f"{fields['JobState']} in {fields['RunTime']}")
EOF
say "demo slice through SLURM: ${slice_seconds}s (script total $(( $(date +%s) - started ))s)"
