"""Provenance names the machine and the content: every record carries the library versions, device, CPU and threads,
and equal weights saved under different names (atomic writes use a temporary name) have equal sha256."""

from __future__ import annotations

import subprocess
import sys

import torch

from havana.models.head import HavanaHead, HeadConfig, save_head
from havana.utils import provenance, torch_io


def test_equal_weights_have_equal_bytes_whatever_the_file_name(tmp_path):
    torch.manual_seed(0)
    head = HavanaHead(HeadConfig(feature_dim=16, num_classes=4))
    save_head(tmp_path / "a" / "head.pt", head)
    save_head(tmp_path / "b_longer_folder_name" / "other.pt", head)
    hashes = {provenance.file_sha256(path) for path in tmp_path.rglob("*.pt")}
    assert len(hashes) == 1
    state = {"w": torch.arange(4.0)}
    torch.save(state, tmp_path / "plain_name.pt")
    torch.save(state, tmp_path / "another_name.pt")  # the oracle: torch.save to a path embeds the name
    assert provenance.file_sha256(tmp_path / "plain_name.pt") != provenance.file_sha256(tmp_path / "another_name.pt")
    torch_io.save(state, tmp_path / "x.tmp")
    torch_io.save(state, tmp_path / "y.pt")
    assert provenance.file_sha256(tmp_path / "x.tmp") == provenance.file_sha256(tmp_path / "y.pt")
    assert torch.equal(torch_io.load(tmp_path / "y.pt", what="t", advice="a")["w"], state["w"])


def test_every_record_names_the_machine():
    machine = provenance.record({"a": 1})["machine"]
    assert machine["torch"] == torch.__version__ and machine["threads"] == torch.get_num_threads()
    assert machine["device"] in ("cpu", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    assert machine["cpu"] and machine["cpu_count"] >= 1 and machine["python"].startswith("3.")
    assert {"cuda", "cudnn", "deterministic_algorithms", "cudnn_benchmark", "tf32_matmul"} <= set(machine)


def test_a_job_without_torch_records_its_version_without_importing_it():
    code = (
        "import sys; from havana.utils import provenance; m = provenance.machine(); "
        "print(m['torch'], 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    version, imported = done.stdout.split()
    assert version == torch.__version__.split("+")[0] or torch.__version__.startswith(version)
    assert imported == "False"
