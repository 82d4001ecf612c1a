"""MLflow tracking against a real SQLite store: run lifecycle, resume, params limits, and eight concurrent writers."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from havana.utils import tracking

EPOCHS = 6
TERMS = ("total", "cls", "jst", "lr")


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_no_tracking_uri_records_nothing(tmp_path):
    with tracking.job_run(None, "synthetic", "x", tmp_path / "run", {"a": 1}) as run:
        run.log_epoch(0, {"loss": 1.0})
        run.log_metrics({"mAP": 0.5})
        run.set_tags({"k": "v"})
    assert not run.active
    assert not (tmp_path / "run").exists()


def test_flatten_params_nests_with_dots_and_truncates_to_mlflow_limits():
    flat = tracking.flatten_params(
        {"head": {"alpha": 0.2, "switches": {"klv": True}}, "long": "x" * 7000, "k" * 300: 1, "empty": {}}
    )
    assert flat["head.alpha"] == "0.2" and flat["head.switches.klv"] == "True"
    assert len(flat["long"]) == 6000 and flat["k" * 250] == "1" and flat["empty"] == "{}"


def test_run_records_params_epochs_final_metrics_artifacts_tags_and_rerun_resumes(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_dir = tmp_path / "job"
    params = {"head": {"alpha": 0.2, "beta": 1.0}, "seed": 0}
    with tracking.job_run(
        uri, "synthetic", "bot_r18/havana/seed0", run_dir, params, tags={"rule": "train_head"}
    ) as run:
        for epoch in range(3):
            run.log_epoch(epoch, {"total": 3.0 - epoch, "lr": 1e-5})
        run.log_metrics({"mAP": 0.42})
        (run_dir / "history.csv").write_text("epoch,total\n0,3.0\n")
        run.log_artifact(run_dir / "history.csv")
    stored_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert stored_id == run.run_id
    client = _client(uri)
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED" and stored.info.run_name == "bot_r18/havana/seed0"
    assert stored.data.params == {"head.alpha": "0.2", "head.beta": "1.0", "seed": "0"}
    assert [m.value for m in sorted(client.get_metric_history(run.run_id, "total"), key=lambda m: m.step)] == [3, 2, 1]
    assert stored.data.metrics["mAP"] == pytest.approx(0.42)
    assert stored.data.tags["rule"] == "train_head" and stored.data.tags["havana_version"]
    assert sorted(f.path for f in client.list_artifacts(run.run_id)) == ["config.yaml", "history.csv"]
    config_copy = Path(client.download_artifacts(run.run_id, "config.yaml", str(tmp_path)))
    assert yaml.safe_load(config_copy.read_text()) == params

    with tracking.job_run(uri, "synthetic", "bot_r18/havana/seed0", run_dir, params) as again:
        again.log_metrics({"mAP": 0.43})
    assert again.run_id == run.run_id
    experiment = client.get_experiment_by_name("synthetic")
    assert len(client.search_runs([experiment.experiment_id])) == 1

    changed = {**params, "head": {"alpha": 0.5, "beta": 1.0}}
    with tracking.job_run(uri, "synthetic", "bot_r18/havana/seed0", run_dir, changed) as fresh:
        pass
    assert fresh.run_id != run.run_id
    assert (run_dir / "mlflow_run_id").read_text().strip() == fresh.run_id


def test_run_ends_failed_when_the_job_raises(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(ValueError, match="boom"):
        with tracking.job_run(uri, "market1501", "r", tmp_path / "job", {"a": 1}) as run:
            raise ValueError("boom")
    assert _client(uri).get_run(run.run_id).info.status == "FAILED"


MLFLOW_BUSY_TIMEOUT_S = 20.0  # MLflow sets PRAGMA busy_timeout = 20000 on every SQLite session it opens


@contextlib.contextmanager
def store_locked(database: Path, release_after_s: float | None = None) -> Iterator[sqlite3.Connection]:
    """A second connection holds SQLite's exclusive lock on the store (no other connection reads or writes), released
    from a thread after `release_after_s` seconds, or when the block ends."""
    holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    released = threading.Lock()

    def release() -> None:
        with released:
            if holder.in_transaction:
                holder.execute("ROLLBACK")

    timer = threading.Timer(release_after_s, release) if release_after_s is not None else None
    if timer is not None:
        timer.start()
    try:
        yield holder
    finally:
        if timer is not None:
            timer.cancel()
        release()
        holder.close()


def counting_log_batch(run: tracking.JobRun, monkeypatch) -> list[float]:
    """The times JobRun calls MLflow's log_batch (the call itself is MLflow's, untouched)."""
    calls: list[float] = []
    real = run.client.log_batch
    monkeypatch.setattr(run.client, "log_batch", lambda *a, **k: (calls.append(time.monotonic()), real(*a, **k))[1])
    return calls


def test_a_write_blocked_by_a_real_store_lock_is_retried_until_it_lands(tmp_path, monkeypatch):
    """A real "database is locked", as MLflow raises it (an MlflowException wrapping SQLAlchemy's OperationalError):
    another connection holds the store's exclusive lock for longer than MLflow's busy timeout. The same write
    straight through MLflow fails; through JobRun.log_metrics (with_retries) it is retried and lands once the lock is
    released. Both run at once (about 23 s)."""
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with tracking.job_run(uri, "synthetic", "locked", tmp_path / "job", {"a": 1}) as run:
        bare: dict[str, Exception] = {}
        log_batch = run.client.log_batch  # MLflow's own call, without with_retries

        def without_retries() -> None:
            try:
                log_batch(run.run_id, metrics=[Metric("bare", 1.0, 0, 0)], synchronous=True)
            except Exception as exc:  # noqa: BLE001 - the error MLflow raises is the finding
                bare["error"] = exc

        calls = counting_log_batch(run, monkeypatch)
        with store_locked(tmp_path / "mlflow.db", release_after_s=MLFLOW_BUSY_TIMEOUT_S + 3):
            thread = threading.Thread(target=without_retries)
            started = time.monotonic()
            thread.start()
            run.log_metrics({"retried": 0.5})
            thread.join()
    error = bare.get("error")
    assert isinstance(error, MlflowException) and "database is locked" in str(error), repr(error)
    assert len(calls) >= 2 and calls[1] - started > MLFLOW_BUSY_TIMEOUT_S - 1  # the first attempt timed out
    stored = _client(uri).get_run(run.run_id)
    assert stored.data.metrics.get("retried") == 0.5 and "bare" not in stored.data.metrics
    assert stored.info.status == "FINISHED"


def test_with_retries_does_not_retry_other_store_errors(tmp_path):
    from mlflow.exceptions import MlflowException

    client = tracking._client(f"sqlite:///{tmp_path}/mlflow.db")
    calls = []
    with pytest.raises(MlflowException, match="not found"):
        tracking.with_retries(lambda: (calls.append(1), client.get_run("0" * 32)), attempts=3)
    assert calls == [1]
    with pytest.raises(KeyError):
        tracking.with_retries(lambda: (calls.append(1), {}["missing"]), attempts=3)
    assert calls == [1, 1]


WRITER = textwrap.dedent(f"""
    import sys
    from havana.utils import tracking
    uri, run_dir, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
    params = {{"worker": worker, "head": {{"alpha": 0.2, "rows": list(range(50))}}}}
    with tracking.job_run(uri, "synthetic", f"worker{{worker}}", run_dir, params, tags={{"rule": "train_head"}}) as run:
        for epoch in range({EPOCHS}):
            run.log_epoch(epoch, {{name: worker * 100 + epoch for name in {TERMS!r}}})
        run.log_metrics({{"mAP": worker / 10}})
""")


def test_eight_concurrent_jobs_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, str(tmp_path / f"job{w}"), str(w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(8)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
    client = _client(uri)
    experiment = client.get_experiment_by_name("synthetic")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"worker{w}" for w in range(8)]
    for run in runs:
        worker = int(run.data.params["worker"])
        assert run.info.status == "FINISHED" and run.data.tags["rule"] == "train_head"
        assert run.data.metrics["mAP"] == pytest.approx(worker / 10)
        for name in TERMS:
            history = sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
            assert [(m.step, m.value) for m in history] == [(e, worker * 100 + e) for e in range(EPOCHS)]


def test_rule_tag_is_the_invoking_havana_subcommand(monkeypatch):
    monkeypatch.setattr("sys.argv", ["/venv/bin/havana", "train-head", "--features", "f.h5", "--seed", "0"])
    assert tracking.invoking_command() == "train_head"
