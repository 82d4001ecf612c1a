"""Device claiming: two processes get two different GPUs, a dead process's lock is free again; CPU fallbacks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from havana.errors import HavanaError
from havana.utils import device

CLAIMER = textwrap.dedent("""
    import sys
    from havana.utils.device import claim_gpu
    print(claim_gpu(sys.argv[2].split(","), lock_dir=sys.argv[1], wait_s=0), flush=True)
    sys.stdin.read()  # hold the lock until the parent closes stdin or kills us
""")


def _start_claimer(lock_dir, candidates):
    proc = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, str(lock_dir), ",".join(candidates)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    return proc, line


def test_two_processes_claim_different_devices_and_a_dead_holder_frees_its_device(tmp_path):
    first, first_id = _start_claimer(tmp_path, ["0", "1"])
    second, second_id = _start_claimer(tmp_path, ["0", "1"])
    try:
        assert {first_id, second_id} == {"0", "1"}
        third = subprocess.run(
            [sys.executable, "-c", CLAIMER, str(tmp_path), "0,1"], input="", capture_output=True, text=True, timeout=60
        )
        assert third.returncode != 0 and "held by other jobs" in third.stderr
        first.kill()  # a crash: the OS releases the flock
        first.wait(timeout=30)
        fourth, fourth_id = _start_claimer(tmp_path, ["0", "1"])
        fourth.communicate("", timeout=60)
        assert fourth_id == first_id
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.communicate("", timeout=60)


def test_claim_in_the_same_process_returns_the_held_device_again(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "_held", {})
    chosen = device.claim_gpu(["7", "8"], lock_dir=tmp_path, wait_s=0)
    assert chosen == "7"
    assert device.claim_gpu(["7", "8"], lock_dir=tmp_path, wait_s=0) == "7"
    assert (tmp_path / "gpu7.lock").read_text().strip() == str(os.getpid())
    os.close(device._held.pop("7"))


def test_claim_with_no_candidates_is_a_clear_error(tmp_path):
    with pytest.raises(HavanaError, match="no GPU"):
        device.claim_gpu([], lock_dir=tmp_path, wait_s=0)


@pytest.mark.parametrize(
    "visible, expected", [("2,3", ["2", "3"]), ("", []), ("-1", []), ("GPU-ab12, GPU-cd34", ["GPU-ab12", "GPU-cd34"])]
)
def test_visible_gpus_respects_cuda_visible_devices(monkeypatch, visible, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert device.visible_gpus() == expected


def test_cpu_requests_and_hidden_gpus_give_cpu(monkeypatch):
    assert device.select_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device.select_device("auto") == torch.device("cpu")
    with pytest.raises(HavanaError, match="no GPU is visible"):
        device.select_device("cuda")


def test_unknown_device_name_is_a_clear_error():
    with pytest.raises(HavanaError, match="unknown device 'tpu'"):
        device.select_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_on_a_gpu_box_returns_a_cuda_device():
    assert device.select_device("auto").type == "cuda"


def test_a_claim_waits_for_a_device_to_be_released(tmp_path):
    holder, held = _start_claimer(tmp_path, ["0"])
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom havana.utils.device import claim_gpu\n"
            f"print(claim_gpu(['0'], lock_dir={str(tmp_path)!r}, wait_s=60, poll_s=0.1))",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first_line = waiter.stderr.readline()
        assert "waiting for one to free up" in first_line and waiter.poll() is None
    finally:
        holder.communicate("", timeout=60)  # the holder exits: its lock is released
    out, _ = waiter.communicate(timeout=60)
    assert held == "0" and out.strip() == "0" and waiter.returncode == 0
