"""Hostile and careless input, one case per test: every mistake is one sentence and a non-zero exit, nothing is read
or written outside the root, no input is lost, and no partial output or temporary is left behind.

Each test states the command line, the exit status, the sentence, and what is on disk afterwards. Full and read-only
disks are real small tmpfs mounts (root only; the tests skip where mounting is not permitted).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import fabricate
import numpy as np
import pytest
import yaml

from havana.cli import main
from havana.data.features import FeatureSplit, write_features
from havana.utils import atomic, device

TOP = fabricate.MARKET_TOP
DIM = 8


# ----------------------------------------------------------------------------------------------------- helpers


def run(capsys, *argv) -> tuple[int, str, str]:
    """`havana ARGV...` in-process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_sentence(status: int, err: str, command: str, *fragments: str, code: int = 2) -> str:
    """Exit `code`, no traceback, and a last stderr line `havana COMMAND: error: <one sentence>.` with `fragments`."""
    assert status == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"havana {command}: error: ") and last.endswith("."), last
    for fragment in fragments:
        assert fragment in last, last
    return last


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Temporaries and partial files: names starting with '.' and ending '.tmp'."""
    return sorted(p.name for p in folder.rglob(".*.tmp"))


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "1m", options: str = ""):
    """A real tmpfs of `size` at `where` (root only), unmounted afterwards; skips the test where mounting fails."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> None:
    """Write a filler file until the file system holding `folder` is full."""
    with open(folder / "filler", "wb") as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(bytes(64 << 10))
                out.flush()


def feature_file(path: Path, *, train_ids: int = 6, dim: int = DIM) -> Path:
    """A small complete feature file: train (2 views), query and gallery (plain, flipped)."""
    rng = np.random.default_rng(0)

    def split(ids, per, first):
        pids = np.repeat(np.arange(first, first + ids), per)
        return FeatureSplit(
            rng.normal(size=(len(pids), 2, dim)),
            pids,
            np.arange(len(pids)) % 2,
            [f"{first}-{i}.jpg" for i in range(len(pids))],
        )

    write_features(
        path,
        {"train": split(train_ids, 4, 1), "query": split(3, 1, 100), "gallery": split(3, 3, 100)},
        {"dataset": "synthetic", "extractor": "toy"},
    )
    return path


HEAD_CONFIG = {
    "heads": {
        "train": {"epochs": 1, "p": 3, "k": 2, "lr": 1e-3, "device": "cpu"},
        "beta_by_dataset": {"synthetic": 1.0},
        "rows": {"havana": {}},
    }
}


def config_file(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def extractor_files(tmp_path_factory):
    """A manifest of tiny images and an untrained resnet18 model.pt (built, not trained: seconds)."""
    import torch
    from image_folder import make_image_folder

    from havana.models.extractor import build_extractor, save_extractor
    from havana.models.extractor_config import ExtractorConfig

    root = tmp_path_factory.mktemp("extractor")
    manifest = make_image_folder(root / "synthetic", train_ids=2, per_id=2, test_ids=2)
    config = ExtractorConfig(arch="resnet18", pretrained=False, image_size=(32, 16))
    torch.manual_seed(0)
    save_extractor(root / "ext" / "model.pt", build_extractor(config, 2), config, 2)
    return manifest, root / "ext" / "model.pt"


# ------------------------------------------------------------------------------- archives: reads outside the root


def test_link_created_before_the_link_it_passes_through_is_refused(tmp_path, capsys):
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(fabricate.tiny_jpeg(1))
    fabricate.fabricate_market1501(tmp_path / "src")
    # the extraction folder is R/market1501/.extract-*/, so ../../../ is tmp_path
    links = fabricate.link_ordering_trick(
        f"{TOP}/bounding_box_train/0099_c1s1_000001_01.jpg", "../../../outside/secret.jpg"
    )
    archive = fabricate.make_tar(tmp_path / "src", tmp_path / "evil.tar", symlinks=links)
    status, _, err = run(capsys, "prepare", "market1501", "--root", tmp_path / "R", "--archive", archive)
    assert_sentence(status, err, "prepare", "0099_c1s1_000001_01.jpg", f"resolves to {secret}", "nothing was extracted")
    assert list((tmp_path / "R" / "market1501").iterdir()) == []  # no manifest, no tree, no temporary folder
    assert secret.read_bytes() == fabricate.tiny_jpeg(1)


def test_msmt17_list_entry_with_dotdot_is_refused(tmp_path, capsys):
    outside = tmp_path / "outside" / "0000_000_01_0303morning_0015_0.jpg"
    outside.parent.mkdir()
    outside.write_bytes(fabricate.tiny_jpeg(1))
    top = fabricate.fabricate_msmt17(tmp_path / "src")
    with open(top / "list_train.txt", "a") as listing:  # R/msmt17/MSMT17_V1/train/../../../../ is tmp_path
        listing.write(f"../../../../outside/{outside.name} 0\n")
    archive = fabricate.make_tar(tmp_path / "src", tmp_path / "MSMT17_V1.tar.gz")
    status, _, err = run(capsys, "prepare", "msmt17", "--root", tmp_path / "R", "--archive", archive)
    assert_sentence(status, err, "prepare", f"resolves to {outside}", "no manifest was written")
    assert not (tmp_path / "R" / "msmt17" / "manifest.csv").exists()


def test_member_name_that_is_not_utf8_is_refused(tmp_path, capsys):
    fabricate.fabricate_market1501(tmp_path / "src", top=TOP + "\udcff")  # the byte 0xff in a folder name
    archive = fabricate.make_tar(tmp_path / "src", tmp_path / "m.tar")
    status, _, err = run(capsys, "prepare", "market1501", "--root", tmp_path / "R", "--archive", archive)
    assert_sentence(status, err, "prepare", "a name that is not UTF-8", "nothing was extracted")
    assert list((tmp_path / "R" / "market1501").iterdir()) == []


def test_list_file_that_is_not_utf8_is_one_sentence(tmp_path, capsys):
    top = fabricate.fabricate_msmt17(tmp_path / "src")
    (top / "list_query.txt").write_bytes(b"0000/0000_000_03_\xff.jpg 0\n")
    archive = fabricate.make_tar(tmp_path / "src", tmp_path / "MSMT17_V1.tar")
    status, _, err = run(capsys, "prepare", "msmt17", "--root", tmp_path / "R", "--archive", archive)
    assert_sentence(status, err, "prepare", "list_query.txt", "is not UTF-8 text")
    assert not (tmp_path / "R" / "msmt17" / "manifest.csv").exists()


# ----------------------------------------------------------------------------------- archives: data loss, bombs


def test_archive_inside_its_destination_is_refused_and_kept(tmp_path, capsys):
    fabricate.fabricate_market1501(tmp_path / "src")
    archive = fabricate.make_zip(tmp_path / "src", tmp_path / "m.zip")
    status, _, err = run(capsys, "prepare", "market1501", "--root", tmp_path / "R", "--archive", archive)
    assert status == 0, err
    inside = tmp_path / "R" / "market1501" / TOP / "m.zip"  # a user parks the archive in the extracted folder
    inside.write_bytes(archive.read_bytes())
    status, _, err = run(capsys, "prepare", "market1501", "--root", tmp_path / "R", "--archive", inside)
    assert_sentence(status, err, "prepare", "lies inside", "would delete it", "move it to")
    assert digest(inside) == digest(archive)


@pytest.mark.parametrize("name", ["bomb.zip", "bomb.tar.gz"])
def test_zip_bomb_is_refused_before_it_fills_the_disk(tmp_path, capsys, name):
    fabricate.fabricate_market1501(tmp_path / "src")
    archive = fabricate.make_bomb(tmp_path / "src", tmp_path / name, f"{TOP}/zeros.bin", 80 << 20)
    assert archive.stat().st_size < 200 << 10  # 80 MiB of zeros in under 200 KiB: over 400 times
    status, _, err = run(capsys, "prepare", "market1501", "--root", tmp_path / "R", "--archive", archive)
    assert_sentence(status, err, "prepare", "only a zip bomb does", "nothing was extracted")
    assert list((tmp_path / "R" / "market1501").iterdir()) == []


def test_damaged_extracted_tree_is_not_trusted_because_of_its_stamp(tmp_path, capsys):
    fabricate.fabricate_market1501(tmp_path / "src")
    archive = fabricate.make_zip(tmp_path / "src", tmp_path / "m.zip")
    assert run(capsys, "prepare", "market1501", "--root", tmp_path / "R", "--archive", archive)[0] == 0
    manifest = tmp_path / "R" / "market1501" / "manifest.csv"
    complete = manifest.read_text()
    image = tmp_path / "R" / "market1501" / TOP / "query" / "0003_c1s1_000003_00.jpg"
    image.unlink()  # damage: an image lost since extraction
    status, _, err = run(capsys, "prepare", "market1501", "--root", tmp_path / "R", "--archive", archive)
    assert status == 0 and "changed since it was extracted" in err
    assert manifest.read_text() == complete and image.is_file()


# ------------------------------------------------------------------------------ input/output collisions (data loss)


def test_evaluate_refuses_to_write_over_its_features(tmp_path, capsys):
    features = feature_file(tmp_path / "f.h5")
    before = digest(features)
    status, _, err = run(capsys, "evaluate", "--features", features, "--out", features, "--device", "cpu")
    assert_sentence(status, err, "evaluate", "--features", "is the same file as --out", "overwrite its own input")
    assert digest(features) == before and leftovers(tmp_path) == []


def test_extract_refuses_to_write_over_its_model(extractor_files, tmp_path, capsys):
    manifest, model = extractor_files
    before = digest(model)
    link = tmp_path / "alias.pt"
    link.symlink_to(model)  # another spelling of the same file
    status, _, err = run(capsys, "extract", "--manifest", manifest, "--model", model, "--out", link, "--device", "cpu")
    assert_sentence(status, err, "extract", "--model", "is the same file as --out")
    assert digest(model) == before


def test_train_head_refuses_features_inside_its_output_folder(tmp_path, capsys):
    features = feature_file(tmp_path / "run" / "f.h5")
    config = config_file(tmp_path / "c.yaml", HEAD_CONFIG)
    status, _, err = run(
        capsys, "train-head", "--features", features, "--row", "havana", "--config", config, "--out", tmp_path / "run"
    )
    assert_sentence(status, err, "train-head", "is inside the folder --out")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["f.h5"]


def test_out_that_is_a_folder_where_a_file_belongs(tmp_path, capsys):
    features = feature_file(tmp_path / "f.h5")
    (tmp_path / "metrics.json").mkdir()
    status, _, err = run(
        capsys, "evaluate", "--features", features, "--out", tmp_path / "metrics.json", "--device", "cpu"
    )
    assert_sentence(status, err, "evaluate", "metrics.json is a folder", "pass a file path")
    assert list((tmp_path / "metrics.json").iterdir()) == [] and leftovers(tmp_path) == []


def test_out_that_is_a_file_where_a_folder_belongs(tmp_path, capsys):
    features = feature_file(tmp_path / "f.h5")
    config = config_file(tmp_path / "c.yaml", HEAD_CONFIG)
    (tmp_path / "head").write_text("notes\n")
    status, _, err = run(
        capsys, "train-head", "--features", features, "--row", "havana", "--config", config, "--out", tmp_path / "head"
    )
    assert_sentence(status, err, "train-head", "head is a file", "pass a folder path")
    assert (tmp_path / "head").read_text() == "notes\n"


# ------------------------------------------------------------------- operating-system errors: one sentence, no crash


def test_evaluate_on_a_full_disk(tmp_path, capsys):
    features = feature_file(tmp_path / "f.h5")
    with tmpfs(tmp_path / "disk") as disk:
        fill(disk)
        status, _, err = run(
            capsys, "evaluate", "--features", features, "--out", disk / "m" / "seed0.json", "--device", "cpu"
        )
        assert_sentence(status, err, "evaluate", "No space left on device (ENOSPC)", "free some disk space", code=1)
        assert leftovers(disk) == [] and not (disk / "m" / "seed0.json").exists()


def test_train_head_on_a_full_disk(tmp_path, capsys):
    features = feature_file(tmp_path / "f.h5")
    config = config_file(tmp_path / "c.yaml", HEAD_CONFIG)
    with tmpfs(tmp_path / "disk") as disk:
        fill(disk)
        status, _, err = run(
            capsys, "train-head", "--features", features, "--row", "havana", "--config", config, "--out", disk / "head"
        )
        assert_sentence(status, err, "train-head", str(disk / "head"), "(ENOSPC)", code=1)
        assert leftovers(disk) == [] and not (disk / "head" / "head.pt").exists()


def test_extract_on_a_full_disk_raises_instead_of_crashing(extractor_files, tmp_path):
    manifest, model = extractor_files
    with tmpfs(tmp_path / "disk", size="2m") as disk:
        out = disk / "features.h5"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "havana",
                "extract",
                "--manifest",
                str(manifest),
                "--model",
                str(model),
                "--out",
                str(out),
                "--device",
                "cpu",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert done.returncode == 1, done.stderr[-2000:]  # not 139 (segmentation fault inside h5py's close)
        assert_sentence(done.returncode, done.stderr, "extract", f"{out}: No space left on device", code=1)
        assert sorted(p.name for p in disk.iterdir()) == []  # no partial file keeps the disk full


def test_read_only_file_system(tmp_path, capsys):
    features = feature_file(tmp_path / "f.h5")
    with tmpfs(tmp_path / "ro", options=",ro") as read_only:
        status, _, err = run(
            capsys, "evaluate", "--features", features, "--out", read_only / "seed0.json", "--device", "cpu"
        )
        assert_sentence(status, err, "evaluate", str(read_only), "(EROFS)", "read-only", code=1)


def test_debug_shows_the_traceback(tmp_path, capsys):
    features = feature_file(tmp_path / "f.h5")
    with pytest.raises(OSError) as raised:
        main(["--debug", "evaluate", "--features", str(features), "--out", "/proc/no/such/dir/m.json"])
    assert raised.value.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS)


# -------------------------------------------------------------------------------- modes, stale temporaries, locks


@pytest.mark.parametrize("mask,file_mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, capsys, mask, file_mode):
    features = feature_file(tmp_path / "f.h5")
    old = os.umask(mask)
    try:
        status, _, err = run(
            capsys, "evaluate", "--features", features, "--out", tmp_path / "m" / "seed0.json", "--device", "cpu"
        )
        with atomic.atomic_path(tmp_path / "folder", directory=True) as folder:
            (folder / "x").write_text("x")
    finally:
        os.umask(old)
    assert status == 0, err
    for written in ("m/seed0.json", "m/seed0.json.provenance.yaml"):
        assert stat.S_IMODE((tmp_path / written).stat().st_mode) == file_mode, written
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o777 & ~mask


def test_stale_temporaries_of_the_same_output_are_swept(tmp_path, capsys):
    features = feature_file(tmp_path / "f.h5")
    out = tmp_path / "m" / "seed0.json"
    out.parent.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [
        out.parent / f".seed0.json.{int(dead.stdout)}@{atomic.HOST}.abcd1234.tmp",  # a killed run's
        out.parent / ".seed0.json.k2j4h5g6.tmp",
    ]  # the older naming (mkstemp), from before the fix
    alive = out.parent / f".seed0.json.{os.getppid()}@{atomic.HOST}.zzzz9999.tmp"  # a live process's: kept
    other = out.parent / f".seed1.json.{int(dead.stdout)}@{atomic.HOST}.abcd1234.tmp"  # another output's: kept
    for path in (*stale, alive, other):
        path.write_bytes(b"x" * 1000)
    status, _, err = run(capsys, "evaluate", "--features", features, "--out", out, "--device", "cpu")
    assert status == 0, err
    assert sorted(p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")) == sorted([alive.name, other.name])


def in_child(action, uid: int | None = None) -> int:
    """Run `action()` in a forked child (as user `uid` when given) and return its exit status: 0 when it returned
    True; the child's GPU locks die with it."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 4
        try:
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            code = 0 if action() else 3
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_gpu_lock_files_are_usable_by_a_second_user():
    if os.geteuid() != 0:
        pytest.skip("switching to a second user needs root")
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="havana-hostile-"))  # pytest's tmp_path is private (0700) to its user
    os.chmod(shared, 0o755)
    locks = shared / "locks"
    old = os.umask(0o022)  # the usual umask: files 0644 and folders 0755 unless the code says otherwise
    try:
        first = in_child(lambda: device.claim_gpu(["0"], locks, wait_s=0) == "0")
        second = [
            in_child(lambda gpu=gpu: device.claim_gpu([gpu], locks, wait_s=0) == gpu, uid=65534) for gpu in ("0", "1")
        ]  # gpu0.lock is root's file; gpu1.lock is new in root's folder
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (locks, *locks.iterdir())}
    finally:
        os.umask(old)
        subprocess.run(["rm", "-rf", str(shared)], check=False)
    assert (first, second) == (0, [0, 0])
    assert modes == {"locks": 0o1777, "gpu0.lock": 0o666, "gpu1.lock": 0o666}


def test_gpu_lock_folder_another_user_cannot_write_is_one_sentence():
    if os.geteuid() != 0:
        pytest.skip("switching to a second user needs root")
    import tempfile

    from havana.errors import HavanaError

    shared = Path(tempfile.mkdtemp(prefix="havana-hostile-"))
    os.chmod(shared, 0o755)  # a lock folder an older version created 0755 for its own user

    def refused() -> bool:
        try:
            device.claim_gpu(["0"], shared, wait_s=0)
        except HavanaError as exc:
            return f"GPU lock file {shared}/gpu0.lock cannot be opened" in str(exc) and "HAVANA_GPU_LOCK_DIR" in str(
                exc
            )
        return False

    try:
        assert in_child(refused, uid=65534) == 0
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)


@pytest.mark.parametrize("case", ["file", "bad-wait", "negative-wait"])
def test_bad_gpu_lock_settings_are_one_sentence(tmp_path, capsys, monkeypatch, case):
    features = feature_file(tmp_path / "f.h5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "hostile-test")  # one visible id, so evaluate claims it
    if case == "file":
        (tmp_path / "locks").write_text("not a folder\n")
        monkeypatch.setenv(device.LOCK_DIR_ENV, str(tmp_path / "locks"))
        expected = ("GPU lock folder", "HAVANA_GPU_LOCK_DIR")
    else:
        monkeypatch.setenv(device.LOCK_DIR_ENV, str(tmp_path / "locks"))
        monkeypatch.setenv(device.WAIT_ENV, "ten" if case == "bad-wait" else "-5")
        expected = ("HAVANA_GPU_WAIT_S", "seconds")
    status, _, err = run(capsys, "evaluate", "--features", features, "--out", tmp_path / "m.json", "--device", "cuda")
    assert_sentence(status, err, "evaluate", *expected)
    assert not (tmp_path / "m.json").exists()


# ----------------------------------------------------------------------------- configs: silent bad output, types


@pytest.mark.parametrize(
    "change,fragments",
    [
        (lambda c: c["heads"]["train"].update(epochs=-3), ("heads.train.epochs=-3 is out of range", "at least 1")),
        (lambda c: c["heads"]["train"].update(lr=float("nan")), ("heads.train.lr=nan is out of range", "above 0")),
        (lambda c: c["heads"]["train"].update(label_smoothing=1.5), ("label_smoothing=1.5", "in [0, 1)")),
        (lambda c: c["heads"]["rows"].update(havana=None), ("heads.rows.havana is empty (null)",)),
        (lambda c: c["heads"]["rows"]["havana"].update(alpha=-0.2), ("heads.rows.havana.alpha=-0.2", "at least 0")),
        (lambda c: c["heads"].update(train=[1, 2]), ("heads.train must be a mapping", "not the list")),
    ],
    ids=["epochs-negative", "lr-nan", "smoothing-over-1", "row-null", "alpha-negative", "section-list"],
)
def test_bad_head_config_is_one_sentence_and_trains_nothing(tmp_path, capsys, change, fragments):
    features = feature_file(tmp_path / "f.h5")
    config = json.loads(json.dumps(HEAD_CONFIG))
    change(config)
    status, _, err = run(
        capsys,
        "train-head",
        "--features",
        features,
        "--row",
        "havana",
        "--config",
        config_file(tmp_path / "c.yaml", config),
        "--out",
        tmp_path / "head",
    )
    assert_sentence(status, err, "train-head", *fragments)
    assert not (tmp_path / "head").exists()


def test_evaluation_section_of_the_wrong_type_is_one_sentence(tmp_path, capsys):
    """train-head no longer reads `evaluation` (havana evaluate scores heads); evaluate refuses it."""
    features = feature_file(tmp_path / "f.h5")
    config = {**json.loads(json.dumps(HEAD_CONFIG)), "evaluation": "cosine"}
    status, _, err = run(
        capsys,
        "evaluate",
        "--features",
        features,
        "--config",
        config_file(tmp_path / "c.yaml", config),
        "--out",
        tmp_path / "m.json",
    )
    assert_sentence(status, err, "evaluate", "evaluation must be a mapping", "not the str 'cosine'")
    assert not (tmp_path / "m.json").exists()


def test_negative_epochs_on_the_command_line_are_refused(tmp_path, capsys):
    features = feature_file(tmp_path / "f.h5")
    status, _, err = run(
        capsys,
        "train-head",
        "--features",
        features,
        "--row",
        "havana",
        "--epochs",
        "-3",
        "--config",
        config_file(tmp_path / "c.yaml", HEAD_CONFIG),
        "--out",
        tmp_path / "head",
    )
    assert_sentence(status, err, "train-head", "heads.train (with command-line overrides).epochs=-3", "at least 1")
    assert not (tmp_path / "head").exists()


def test_bad_extractor_config_is_one_sentence(extractor_files, tmp_path, capsys):
    manifest, _ = extractor_files
    config = {"extractors": {"tiny": {"arch": "resnet18", "pretrained": False, "train": {"epochs": 0}}}}
    status, _, err = run(
        capsys,
        "train-extractor",
        "--manifest",
        manifest,
        "--extractor",
        "tiny",
        "--config",
        config_file(tmp_path / "c.yaml", config),
        "--out",
        tmp_path / "ext",
    )
    assert_sentence(status, err, "train-extractor", "extractors.tiny.train.epochs=0 is out of range")
    assert not (tmp_path / "ext").exists()


# --------------------------------------------------------------------------------------- metrics in `havana table`


TABLE_CONFIG = {
    "seeds": [0],
    "active_datasets": ["market1501"],
    "heads": {"rows": {"havana": {}}},
    "extractors": {"bot_r18": {"arch": "resnet18"}},
    "tables": {
        "table9": {
            "caption": "test",
            "columns": [{"metric": "mAP", "dataset": "market1501"}],
            "rows": [{"label": "HAVANA", "extractor": "bot_r18", "row": "havana", "paper": [80.0]}],
        }
    },
}


@pytest.mark.parametrize(
    "payload,fragment",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "cannot be read (UnicodeDecodeError)"),
        (b'{"plain": {"mAP": NaN, "R1": 0.5}, "flip": {"mAP": 0.5}}', "plain.mAP = nan, not a fraction in [0, 1]"),
        (
            b'{"plain": {"mAP": 21.156, "R1": 0.5}, "flip": {"mAP": 0.5}}',
            "plain.mAP = 21.156, not a fraction in [0, 1]",
        ),
        (b'{"plain": {"mAP": "0.5"}, "flip": {"mAP": 0.5}}', "plain.mAP = '0.5', not a fraction"),
        (b"[0.5]", "holds a list, not the mapping"),
    ],
    ids=["binary", "nan", "percent-scale", "string", "list"],
)
def test_table_refuses_metrics_that_are_not_fractions(tmp_path, capsys, payload, fragment):
    metrics = tmp_path / "results" / "market1501" / "metrics" / "bot_r18" / "havana" / "seed0.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_bytes(payload)
    status, _, err = run(
        capsys,
        "table",
        "--config",
        config_file(tmp_path / "c.yaml", TABLE_CONFIG),
        "--table",
        "table9",
        "--results-dir",
        tmp_path / "results",
        "--out-prefix",
        tmp_path / "t9",
    )
    assert_sentence(status, err, "table", str(metrics), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "results"]  # no table, no partial file


# ------------------------------------------------------------------------------- damaged features and checkpoints


def test_feature_file_with_inconsistent_shapes_is_one_sentence(tmp_path, capsys):
    import h5py

    features = feature_file(tmp_path / "f.h5")
    with h5py.File(features, "a") as h5:  # one pid fewer than features: not written by `havana extract`
        pids = h5["query"]["pids"][...]
        del h5["query"]["pids"]
        h5["query"].create_dataset("pids", data=pids[:-1])
    status, _, err = run(capsys, "evaluate", "--features", features, "--out", tmp_path / "m.json", "--device", "cpu")
    assert_sentence(status, err, "evaluate", "has an inconsistent 'query' split", "rerun `havana extract`")
    assert not (tmp_path / "m.json").exists()


def test_truncated_head_is_one_sentence(tmp_path, capsys):
    from havana.models.head import HavanaHead, HeadConfig, save_head

    features = feature_file(tmp_path / "f.h5")
    head = tmp_path / "head.pt"
    save_head(head, HavanaHead(HeadConfig(feature_dim=DIM, num_classes=6)))
    head.write_bytes(head.read_bytes()[: int(head.stat().st_size * 0.9)])  # cut short, as a full disk would
    status, _, err = run(
        capsys, "evaluate", "--features", features, "--head", head, "--out", tmp_path / "m.json", "--device", "cpu"
    )
    assert_sentence(status, err, "evaluate", f"head checkpoint {head} is truncated or not a torch file")
    assert not (tmp_path / "m.json").exists()


def test_truncated_model_is_one_sentence(extractor_files, tmp_path, capsys):
    manifest, model = extractor_files
    cut = tmp_path / "model.pt"
    cut.write_bytes(b"")  # an empty file, as an interrupted copy leaves
    status, _, err = run(
        capsys, "extract", "--manifest", manifest, "--model", cut, "--out", tmp_path / "f.h5", "--device", "cpu"
    )
    assert_sentence(status, err, "extract", f"extractor checkpoint {cut} is truncated or not a torch file")
    assert not (tmp_path / "f.h5").exists() and leftovers(tmp_path) == []


def test_truncated_training_checkpoint_is_one_sentence(tmp_path, capsys):
    features = feature_file(tmp_path / "f.h5")
    (tmp_path / "head").mkdir()
    (tmp_path / "head" / "checkpoint.pt").write_bytes(b"PK\x03\x04 cut short")
    status, _, err = run(
        capsys,
        "train-head",
        "--features",
        features,
        "--row",
        "havana",
        "--config",
        config_file(tmp_path / "c.yaml", HEAD_CONFIG),
        "--out",
        tmp_path / "head",
    )
    assert_sentence(
        status,
        err,
        "train-head",
        "training checkpoint",
        "is truncated or not a torch file",
        "delete it to train these heads from the start",
    )
    assert not (tmp_path / "head" / "head.pt").exists()


def test_head_checkpoint_resumes_when_only_its_device_setting_changes(tmp_path, capsys, monkeypatch):
    """Both runs are on this CPU: only heads.train.device changes (cpu, then auto), which is not part of the
    checkpoint's fingerprint, so the rerun resumes instead of refusing "a different configuration". A real change of
    device is test_head_checkpoint_resumes_across_devices (where CUDA exists)."""
    import torch

    from havana.data.features import read_features
    from havana.engine.train_head import HeadRun, train_heads
    from havana.models.head import HeadTrainConfig, RowConfig
    from havana.utils.checkpointing import Checkpointer

    features = read_features(feature_file(tmp_path / "f.h5"))
    row = RowConfig(beta=1.0)
    run_spec = HeadRun(out_dir=tmp_path / "head", row_name="havana", dataset="synthetic")
    save = Checkpointer.save

    def save_then_die(self, state, where):  # an interrupted job: its epoch-1 checkpoint is left
        save(self, state, where)
        raise SystemExit("killed")

    monkeypatch.setattr(Checkpointer, "save", save_then_die)
    with pytest.raises(SystemExit):
        train_heads(
            features,
            row,
            HeadTrainConfig(epochs=2, p=3, k=2, lr=1e-3, device="cpu", checkpoint_minutes=0),
            [run_spec],
            torch.device("cpu"),
        )
    monkeypatch.setattr(Checkpointer, "save", save)
    history = (tmp_path / "head" / "history.csv").read_text().splitlines()
    train_heads(
        features, row, HeadTrainConfig(epochs=2, p=3, k=2, lr=1e-3, device="auto"), [run_spec], torch.device("cpu")
    )  # resumes at epoch 2 instead of refusing "a different configuration"
    resumed = (tmp_path / "head" / "history.csv").read_text().splitlines()
    assert len(resumed) == 3 and resumed[1] == history[1]  # epoch 1 kept as is


def _head_trainer(tmp_path: Path, out: Path, device: str, epochs: int):
    """`havana train-head` in its own process on `device`, checkpointing after every epoch (interval 0)."""
    features = tmp_path / "f.h5"
    if not features.is_file():
        feature_file(features, train_ids=30)  # 120 images: 20 steps of 3 x 2 per epoch
    config = dict(HEAD_CONFIG, heads={**HEAD_CONFIG["heads"]})
    config["heads"]["train"] = {**HEAD_CONFIG["heads"]["train"], "epochs": epochs, "device": device}
    config["heads"]["train"]["checkpoint_minutes"] = 0
    argv = ["train-head", "--features", features, "--row", "havana", "--out", out]
    argv += ["--config", config_file(tmp_path / f"{device}.yaml", config)]
    return subprocess.Popen(
        [sys.executable, "-m", "havana", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(
    not _has_cuda(), reason="needs a CUDA device: a checkpoint written on one device, resumed on another"
)
@pytest.mark.parametrize(("first", "then"), [("cuda", "cpu"), ("cpu", "cuda")])
def test_head_checkpoint_resumes_across_devices(tmp_path, first, then):
    """A real process trains on `first` and is killed (SIGKILL) after an epoch checkpoint; the rerun on `then` loads
    that checkpoint (weights and Adam state moved to the other device), keeps the epochs already done and finishes."""
    import signal
    import time

    import torch

    epochs, out = 30, tmp_path / "head"
    proc = _head_trainer(tmp_path, out, first, epochs)
    history, checkpoint = out / "history.csv", out / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if checkpoint.is_file() and history.is_file() and len(history.read_text().splitlines()) >= 4:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    assert checkpoint.is_file() and not (out / "head.pt").exists()
    done = torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]
    assert 2 <= done < epochs
    before = history.read_text().splitlines()[: 1 + done]
    rerun = _head_trainer(tmp_path, out, then, epochs)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-2000:]
    after = history.read_text().splitlines()
    assert len(after) == 1 + epochs and after[: 1 + done] == before  # resumed, not restarted
    assert (out / "head.pt").is_file() and not checkpoint.exists()
    weights = torch.load(out / "head.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


# ------------------------------------------------------------------------------------ MLflow store, Snakemake rule


def test_damaged_mlflow_store_is_one_sentence(tmp_path, capsys):
    features = feature_file(tmp_path / "f.h5")
    database = tmp_path / "mlflow.db"
    database.write_bytes(b"this is not an SQLite database, but a file that took its name\n" * 100)
    before = digest(database)
    status, _, err = run(
        capsys,
        "evaluate",
        "--features",
        features,
        "--out",
        tmp_path / "m.json",
        "--device",
        "cpu",
        "--tracking-uri",
        f"sqlite:///{database}",
    )
    assert_sentence(
        status, err, "evaluate", f"MLflow store sqlite:///{database} cannot be opened", "move the file away"
    )
    assert digest(database) == before and not (tmp_path / "m.json").exists()


def test_store_locked_past_every_retry_is_one_sentence(tmp_path, monkeypatch):
    """A real SQLite lock held on the store by another connection through every attempt of a write through MLflow
    (each attempt waits MLflow's 20 s busy timeout and fails with MLflow's own wrapped "database is locked"; 2
    attempts here instead of 12): one sentence, not MLflow's traceback. Once the lock is gone the same write lands at
    once (about 45 s)."""
    from test_tracking import counting_log_batch, store_locked

    from havana.errors import HavanaError
    from havana.utils import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr(tracking, "RETRY_ATTEMPTS", 2)
    with tracking.job_run(uri, "synthetic", "locked", tmp_path / "job", {"a": 1}) as run:
        calls = counting_log_batch(run, monkeypatch)
        with store_locked(tmp_path / "mlflow.db"):
            with pytest.raises(HavanaError, match="the MLflow store stayed locked by other jobs through 2 attempt"):
                run.log_metrics({"late": 1.0})
        assert len(calls) == 2
        run.log_metrics({"late": 1.0})  # the lock is gone: the same call succeeds at once
        assert len(calls) == 3


def test_prepare_rule_quotes_an_archive_path_with_a_space(tmp_path):
    from test_workflow import snakemake

    fabricate.fabricate_market1501(tmp_path / "src")
    (tmp_path / "my archives").mkdir()
    archive = fabricate.make_zip(tmp_path / "src", tmp_path / "my archives" / "Market 1501.zip")
    overlay = config_file(
        tmp_path / "overlay.yaml",
        {
            "active_datasets": ["market1501"],
            "tracking_uri": None,
            "datasets": {"market1501": {"archive": str(archive), "url": None, "sha256": None}},
        },
    )
    result = snakemake(tmp_path, "resources/market1501/manifest.csv", "--cores", "1", configfile=overlay)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert (tmp_path / "resources" / "market1501" / "manifest.csv").read_text().count("\n") == 11


# ------------------------------------------------------------------- found by the sweep of careless command lines


def test_config_file_that_is_binary_is_one_sentence(tmp_path, capsys):
    features = feature_file(tmp_path / "f.h5")
    (tmp_path / "c.yaml").write_bytes(b"\x00\xff\xfe not text")
    status, _, err = run(
        capsys,
        "evaluate",
        "--features",
        features,
        "--config",
        tmp_path / "c.yaml",
        "--out",
        tmp_path / "m.json",
        "--device",
        "cpu",
    )
    assert_sentence(status, err, "evaluate", "is not valid YAML (UnicodeDecodeError)")
    assert not (tmp_path / "m.json").exists()


def test_malformed_url_is_one_sentence(tmp_path, capsys):
    status, _, err = run(capsys, "prepare", "market1501", "--root", tmp_path / "R", "--url", "https://[bad/m.zip")
    assert_sentence(status, err, "prepare", "is not a valid URL")
    assert not (tmp_path / "R" / "archives").exists() or list((tmp_path / "R" / "archives").iterdir()) == []
