"""MLflow tracking: one run per workflow job, with its resolved config as params, per-epoch and final metrics,
artifacts and provenance tags.

The run id is kept in `run_dir/mlflow_run_id`, so a rerun of the same job resumes its run instead of duplicating it.
SQLite stores refuse concurrent writers ("database is locked"), so every store call is retried with backoff and the
store's first creation is serialised by a file lock; eight jobs logging at once lose nothing. MLflow is imported
lazily (it is slow to import) and `tracking_uri=None` records nothing, which is what unit tests use.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from havana import __version__
from havana.errors import HavanaError
from havana.layout import RUN_ID_FILE
from havana.utils import atomic, provenance

CELL_SEPARATOR = "; "  # between the table cells of the table_cells tag (havana.report.runs splits on it)
CONFIG_HASH_TAG = "config_hash"  # the hash of a run's resolved job config without its seed: one per configuration
LABEL_TAG = "label."  # + a table name: the run's row label in that table, e.g. label.table3 = "V+J+H"
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # the UI opens the runs table, not GenAI traces
RETRY_ATTEMPTS = 12  # bounded: about a minute of backoff in total before giving up
RETRY_FIRST_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 8.0
T = TypeVar("T")


def flatten_params(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"}; keys and values cut to MLflow's length limits."""
    from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH

    flat: dict[str, str] = {}
    for key, value in provenance.to_plain(dict(mapping)).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        flat[name[:MAX_ENTITY_KEY_LENGTH]] = str(value)[:MAX_PARAM_VAL_LENGTH]
    return flat


def _is_transient(exc: Exception) -> bool:
    """Whether a store error is a concurrency hiccup worth retrying (SQLite lock or busy)."""
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(marker in text for marker in ("database is locked", "database is busy", "database table is locked"))


def with_retries(call: Callable[[], T], *, attempts: int | None = None) -> T:
    """Run `call`, retrying a transient store error with jittered exponential backoff, at most `attempts` times
    (default RETRY_ATTEMPTS); a store still locked after the last attempt is one sentence, not a traceback."""
    attempts = RETRY_ATTEMPTS if attempts is None else attempts
    delay, started = RETRY_FIRST_DELAY_S, time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:  # MLflow wraps SQLAlchemy errors in its own exception types
            if not _is_transient(exc):
                raise
            if attempt == attempts:
                raise HavanaError(
                    f"the MLflow store stayed locked by other jobs through {attempts} attempt(s) over "
                    f"{time.monotonic() - started:.0f} s; rerun the job (its run resumes), or give it a "
                    "store of its own with --tracking-uri."
                ) from None
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, RETRY_MAX_DELAY_S)
    raise AssertionError("unreachable")


class _RetriedLockFilter(logging.Filter):
    """Drops MLflow's logged traceback of a transient lock error: the call is retried, and if it keeps failing the
    user gets one sentence from `with_retries`, not a traceback per attempt in the job's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[1] is not None and _is_transient(record.exc_info[1]))


_LOCK_FILTER = _RetriedLockFilter()
MLFLOW_STORE_LOGGERS = ("mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store")


def _sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI, else None."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


@contextlib.contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise creation of a SQLite store (MLflow's schema migration is not safe under concurrent first use)."""
    database = _sqlite_file(tracking_uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _client(tracking_uri: str):
    """An MlflowClient whose store exists (created under the store lock)."""
    from mlflow.tracking import MlflowClient

    for name in MLFLOW_STORE_LOGGERS:
        logging.getLogger(name).addFilter(_LOCK_FILTER)  # idempotent: a filter is added once
    with _store_lock(tracking_uri):
        try:
            client = with_retries(lambda: MlflowClient(tracking_uri=tracking_uri))
            with_retries(lambda: client.search_experiments(max_results=1))  # forces store creation and migration
        except HavanaError:
            raise
        except Exception as exc:  # a damaged or foreign file, a bad URI: MLflow and SQLAlchemy raise many types
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise HavanaError(
                f"MLflow store {tracking_uri} cannot be opened ({reason}); move the file away to start "
                "a new store, or fix --tracking-uri."
            ) from None
    return client


def _artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside the database (`mlartifacts/<experiment>`), not in the working dir."""
    database = _sqlite_file(tracking_uri)
    if database is None:
        return None
    return (database.resolve().parent / "mlartifacts" / experiment).as_uri()


def ensure_experiment(client, tracking_uri: str, name: str) -> str:
    """The id of experiment `name`, created if missing; safe when several jobs create it at the same moment."""
    from mlflow.exceptions import MlflowException

    found = with_retries(lambda: client.get_experiment_by_name(name))
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise HavanaError(
                f"MLflow experiment '{name}' is deleted in {tracking_uri}; restore it with "
                f"`mlflow experiments restore` or delete it permanently with `mlflow gc`."
            )
        experiment_id = found.experiment_id
        if found.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            with_retries(lambda: client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND))
        return experiment_id
    try:
        return with_retries(
            lambda: client.create_experiment(
                name, artifact_location=_artifact_location(tracking_uri, name), tags=dict([EXPERIMENT_KIND])
            )
        )
    except MlflowException:
        found = with_retries(lambda: client.get_experiment_by_name(name))  # another job created it first
        if found is None:
            raise
        return found.experiment_id


def run_name(row: str, seed: int | str | None, extractor: str, dataset: str) -> str:
    """'vnae_jst seed0 · bot_r50 · market1501': what differs between ablation runs first (the UI cuts long names)."""
    lead = row if seed is None else f"{row} seed{seed}"
    return " · ".join((lead, extractor, dataset))


def cell_tags(
    dataset: str,
    extractor: str,
    row: str | None = None,
    seed: int | None = None,
    table_cells: list[str] | tuple[str, ...] = (),
    configuration: Any = None,
) -> dict[str, str]:
    """The tags that make runs filterable and groupable in the UI: dataset, extractor, row, seed, table_cells, the
    row's label in each table it feeds (label.<table>, what the paper prints) and, given the run's resolved job config
    without its seed (`configuration`), its hash (config_hash): the seeds of one configuration share it, an edited
    row gets another."""
    tags = {"dataset": dataset, "extractor": extractor}
    if row is not None:
        tags["row"] = row
    if seed is not None:
        tags["seed"] = str(seed)
    if table_cells:
        tags["table_cells"] = CELL_SEPARATOR.join(table_cells)
        for cell in table_cells:
            table, label = cell.split(":", 1)
            tags.setdefault(LABEL_TAG + table, label)
    if configuration is not None:
        tags[CONFIG_HASH_TAG] = provenance.config_hash(configuration)
    return tags


def source_tags() -> dict[str, str]:
    """MLflow's own source tags (its Source column, git commit, entry point) for this `havana` process."""
    from mlflow.utils.mlflow_tags import (
        MLFLOW_GIT_COMMIT,
        MLFLOW_GIT_DIRTY,
        MLFLOW_PROJECT_ENTRY_POINT,
        MLFLOW_SOURCE_NAME,
        MLFLOW_SOURCE_TYPE,
    )

    sha = provenance.git_sha()
    command = invoking_command()
    return {
        MLFLOW_SOURCE_NAME: f"havana {command.replace('_', '-')}",
        MLFLOW_SOURCE_TYPE: "LOCAL",
        MLFLOW_GIT_COMMIT: sha.removesuffix("-dirty"),
        MLFLOW_GIT_DIRTY: str(sha.endswith("-dirty")).lower(),
        MLFLOW_PROJECT_ENTRY_POINT: command,
    }


class JobRun:
    """One job's MLflow run; with no client (tracking off) every method records nothing."""

    def __init__(self, client=None, run_id: str | None = None):
        self.client = client
        self.run_id = run_id

    @property
    def active(self) -> bool:
        """Whether anything is being recorded."""
        return self.client is not None

    def _log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = int(time.time() * 1000)
        entries = [Metric(str(k), float(v), now, int(step)) for k, v in metrics.items() if v is not None]
        for start in range(0, len(entries), MAX_METRICS_PER_BATCH):
            chunk = entries[start : start + MAX_METRICS_PER_BATCH]
            with_retries(lambda: self.client.log_batch(self.run_id, metrics=chunk, synchronous=True))

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Log one epoch's metrics (all loss terms, lr, ...) in a single batch at step `epoch`."""
        if self.active:
            self._log(metrics, epoch)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log the job's final metrics (step 0)."""
        if self.active:
            self._log(metrics, 0)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (nested mappings flattened to dotted keys); values already logged are left as they are."""
        if not self.active:
            return
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH

        logged = with_retries(lambda: self.client.get_run(self.run_id)).data.params
        entries = [Param(k, v) for k, v in flatten_params(params).items() if k not in logged]
        for start in range(0, len(entries), MAX_PARAMS_TAGS_PER_BATCH):
            chunk = entries[start : start + MAX_PARAMS_TAGS_PER_BATCH]
            with_retries(lambda: self.client.log_batch(self.run_id, params=chunk, synchronous=True))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values turned into strings)."""
        if not self.active:
            return
        from mlflow.entities import RunTag
        from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH

        entries = [RunTag(str(k), str(v)[:MAX_TAG_VAL_LENGTH]) for k, v in tags.items()]
        for start in range(0, len(entries), MAX_PARAMS_TAGS_PER_BATCH):
            chunk = entries[start : start + MAX_PARAMS_TAGS_PER_BATCH]
            with_retries(lambda: self.client.log_batch(self.run_id, tags=chunk, synchronous=True))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Copy a file (history.csv, provenance, config) into the run's artifacts."""
        if self.active:
            with_retries(lambda: self.client.log_artifact(self.run_id, os.fspath(path), artifact_path))


def invoking_command() -> str:
    """The havana subcommand running this process (e.g. train_head), recorded as the run's `rule` tag."""
    words = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    return words[0].replace("-", "_") if words else Path(sys.argv[0]).name


def _log_config_artifact(run: JobRun, params: Mapping[str, Any]) -> None:
    """Store the job's resolved config as `config.yaml` among the run's artifacts."""
    import yaml

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump(provenance.to_plain(dict(params)), sort_keys=False), encoding="utf-8")
        run.log_artifact(path)


def _resumable_run(client, experiment_id: str, run_dir: Path, params: dict[str, str]) -> str | None:
    """The run id stored in `run_dir` when that run exists in this store's experiment with the same params."""
    from mlflow.exceptions import MlflowException

    id_file = run_dir / RUN_ID_FILE
    if not id_file.is_file():
        return None
    run_id = id_file.read_text(encoding="utf-8").strip()
    try:
        run = with_retries(lambda: client.get_run(run_id))
    except MlflowException:
        return None  # the store was replaced; start afresh
    if run.info.experiment_id != experiment_id or run.info.lifecycle_stage == "deleted":
        return None
    logged = run.data.params
    if any(logged.get(key, value) != value for key, value in params.items()):
        return None  # the job's config changed: this is a different run
    return run_id


@contextlib.contextmanager
def job_run(
    tracking_uri: str | None,
    experiment: str,
    run_name: str,
    run_dir: str | os.PathLike,
    params: Mapping[str, Any],
    tags: Mapping[str, Any] | None = None,
) -> Iterator[JobRun]:
    """Open (or resume) the MLflow run of one job and close it FINISHED, or FAILED/KILLED when the body raises.

    `experiment` is the dataset name, `run_name` is built from the job's wildcards, `params` is the job's resolved
    config (flattened and truncated to MLflow's limits). With `tracking_uri=None` the yielded run records nothing.
    """
    if tracking_uri is None:
        yield JobRun()
        return
    run_dir = Path(run_dir)
    client = _client(tracking_uri)
    experiment_id = ensure_experiment(client, tracking_uri, experiment)
    flat = flatten_params(params)
    run_id = _resumable_run(client, experiment_id, run_dir, flat)
    if run_id is None:
        run_id = with_retries(lambda: client.create_run(experiment_id, run_name=run_name)).info.run_id
        atomic.write_text(run_dir / RUN_ID_FILE, run_id + "\n")
    else:
        with_retries(lambda: client.update_run(run_id, status="RUNNING"))
    run = JobRun(client, run_id)
    run.log_params(params)
    run.set_tags(
        {
            "git_sha": provenance.git_sha(),
            "havana_version": __version__,
            **{f"machine.{key}": value for key, value in provenance.machine().items()},
            "rule": invoking_command(),
            **source_tags(),
            **(tags or {}),
        }
    )
    _log_config_artifact(run, params)
    try:
        yield run
    except KeyboardInterrupt:
        with_retries(lambda: client.set_terminated(run_id, "KILLED"))
        raise
    except BaseException:
        with_retries(lambda: client.set_terminated(run_id, "FAILED"))
        raise
    with_retries(lambda: client.set_terminated(run_id, "FINISHED"))


@contextlib.contextmanager
def existing_run(tracking_uri: str | None, run_dir: str | os.PathLike) -> Iterator[JobRun | None]:
    """The run recorded in `run_dir/mlflow_run_id` (a head's run, for its evaluation to log into), or None when
    tracking is off, no id is recorded, or the store does not hold that run (any more). Its status is left as is."""
    from mlflow.exceptions import MlflowException

    id_file = Path(run_dir) / RUN_ID_FILE
    if tracking_uri is None or not id_file.is_file():
        yield None
        return
    client = _client(tracking_uri)
    run_id = id_file.read_text(encoding="utf-8").strip()
    try:
        found = with_retries(lambda: client.get_run(run_id))
    except MlflowException:
        found = None
    yield JobRun(client, run_id) if found is not None and found.info.lifecycle_stage != "deleted" else None
