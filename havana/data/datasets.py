"""Dataset registry: each re-ID dataset parses its real folder layout into a manifest (path, pid, camid, split).

A manifest is a CSV with columns `path,pid,camid,split`: `path` relative to `resources/<ds>/`, `camid` 0-based,
`split` one of train|query|gallery. Junk images (pid -1) are dropped; distractors (pid 0 in Market-1501-style
galleries) are kept. Parsers are pure: they read a folder and return a DataFrame; writing is `write_manifest`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # pandas is imported by the functions that build or read a manifest (`havana --help` needs none)
    import pandas as pd

from havana.errors import HavanaError
from havana.utils import atomic

SPLITS = ("train", "query", "gallery")
MANIFEST_COLUMNS = ("path", "pid", "camid", "split")

# (ids, images) per split, as in the paper's Table 1.
Statistics = dict[str, tuple[int, int]]


class Dataset:
    """A re-ID dataset: where its archive comes from, how to recognise its top folder, how to parse it."""

    name: ClassVar[str]
    title: ClassVar[str]  # the paper's spelling, shown in tables and figures
    synthetic: ClassVar[bool] = False  # rendered by `havana synth` (config datasets.<name>.synth), not downloaded
    top_folder: ClassVar[str]  # the folder name the official archive unpacks to
    archive_name: ClassVar[str]  # the conventional archive file name under resources/archives/
    how_to_obtain: ClassVar[str]  # one clause: where the archive comes from
    layout: ClassVar[str]  # the expected folder layout, for error messages
    official: ClassVar[Statistics | None]  # paper Table 1 statistics, None when they depend on the data

    def is_top(self, folder: Path) -> bool:
        """Whether `folder` is this dataset's top folder (holds the expected sub-folders)."""
        raise NotImplementedError

    def parse(self, top: Path) -> pd.DataFrame:
        """The manifest of the dataset rooted at `top`, with paths relative to `top`."""
        raise NotImplementedError

    def expected_statistics(self, top: Path) -> Statistics | None:
        """The statistics the parsed manifest should have (official ones for real datasets)."""
        return self.official


class Market1501(Dataset):
    """Market-1501 (Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015).

    Official statistics (paper Table 1), ids / images: train 751 / 12936, query 750 / 3368, gallery 751 / 15913
    (the gallery counts distractor pid 0 as one id and excludes the 3819 junk images, pid -1). 6 cameras.
    Layout: `Market-1501-v15.09.15/{bounding_box_train,bounding_box_test,query}/0002_c1s1_000451_03.jpg`
    (pid, camera 1-based, sequence, frame, box). `gt_bbox/`, `gt_query/`, `Thumbs.db` and other files are ignored.
    Obtain `Market-1501-v15.09.15.zip` from the authors' official project page.
    """

    name = "market1501"
    title = "Market-1501"
    top_folder = "Market-1501-v15.09.15"
    archive_name = "Market-1501-v15.09.15.zip"
    how_to_obtain = (
        "download Market-1501-v15.09.15.zip from the authors' official page "
        "(http://zheng-lab.cecs.anu.edu.au/Project/project_reid.html)"
    )
    layout = (
        "Market-1501-v15.09.15/{bounding_box_train,bounding_box_test,query}/ with images like 0002_c1s1_000451_03.jpg"
    )
    official = {"train": (751, 12936), "query": (750, 3368), "gallery": (751, 15913)}
    subfolders: ClassVar[dict[str, str]] = {
        "train": "bounding_box_train",
        "query": "query",
        "gallery": "bounding_box_test",
    }
    pattern: ClassVar[re.Pattern] = re.compile(r"^(-?\d+)_c(\d+)s\d+_\d+_\d+\.jpg$")
    num_cameras: ClassVar[int | None] = 6

    def is_top(self, folder: Path) -> bool:
        """A folder holding bounding_box_train, bounding_box_test and query whose images follow this naming."""
        if not all((folder / sub).is_dir() for sub in self.subfolders.values()):
            return False
        return any(self.pattern.match(p.name) for p in (folder / self.subfolders["train"]).iterdir())

    def parse(self, top: Path) -> pd.DataFrame:
        """Rows for every image named like the dataset's files; junk (pid -1) dropped, distractors (pid 0) kept."""
        rows = []
        for split, sub in self.subfolders.items():
            for entry in sorted(os.scandir(top / sub), key=lambda e: e.name):
                match = self.pattern.match(entry.name)
                if not entry.is_file() or match is None:
                    continue  # Thumbs.db and other stray files
                pid, cam = int(match.group(1)), int(match.group(2))
                if pid == -1:
                    continue
                rows.append((f"{sub}/{entry.name}", pid, self._camid(cam, entry.name), split))
        return make_manifest(rows)

    def _camid(self, camera: int, filename: str) -> int:
        """0-based camera index, checked against the dataset's camera count."""
        if camera < 1 or (self.num_cameras is not None and camera > self.num_cameras):
            raise HavanaError(
                f"image {filename} names camera {camera}, but {self.name} has cameras 1..{self.num_cameras}; "
                f"the archive is not an unmodified {self.name} release."
            )
        return camera - 1


class DukeMTMCReID(Market1501):
    """DukeMTMC-reID (Zheng et al., "Unlabeled Samples Generated by GAN Improve the Person Re-identification
    Baseline in vitro", ICCV 2017; from Ristani et al., DukeMTMC, ECCVW 2016).

    Official statistics (paper Table 1), ids / images: train 702 / 16522, query 702 / 2228, gallery 1110 / 17661
    (408 gallery-only distractor ids). 8 cameras.
    Layout: `DukeMTMC-reID/{bounding_box_train,bounding_box_test,query}/0001_c2_f0046182.jpg` (pid, camera 1-based,
    frame).
    The dataset was withdrawn by its authors in 2019 and has no official download; use a copy you already hold.
    """

    name = "dukemtmc"
    title = "DukeMTMC"
    top_folder = "DukeMTMC-reID"
    archive_name = "DukeMTMC-reID.zip"
    how_to_obtain = (
        "DukeMTMC-reID was withdrawn by its authors and has no official download, "
        "so use the DukeMTMC-reID.zip you already hold"
    )
    layout = "DukeMTMC-reID/{bounding_box_train,bounding_box_test,query}/ with images like 0001_c2_f0046182.jpg"
    official = {"train": (702, 16522), "query": (702, 2228), "gallery": (1110, 17661)}
    pattern = re.compile(r"^(-?\d+)_c(\d+)_f\d+\.jpg$")
    num_cameras = 8


class Synthetic(Market1501):
    """Synthetic pedestrians rendered by `havana synth` in the Market-1501 layout and naming, parsed like Market-1501.

    Statistics depend on the rendering parameters; `havana synth` records them in `synthetic.json` in the top folder,
    and those are the expected statistics. Any number of cameras up to 9.
    """

    name = "synthetic"
    title = "Synthetic"
    synthetic = True
    top_folder = "Synthetic-ReID"
    archive_name = "synthetic"  # a folder written by `havana synth`, not an archive file
    how_to_obtain = "render it with `havana synth --out resources/archives/synthetic` and pass that folder"
    layout = (
        "Synthetic-ReID/ with synthetic.json and {bounding_box_train,bounding_box_test,query}/ (Market-1501 naming)"
    )
    official = None
    num_cameras = 9
    info_file: ClassVar[str] = "synthetic.json"

    def is_top(self, folder: Path) -> bool:
        """The Market-1501 layout plus the `synthetic.json` that `havana synth` writes."""
        return (folder / self.info_file).is_file() and super().is_top(folder)

    def expected_statistics(self, top: Path) -> Statistics | None:
        """The per-split (ids, images) that `havana synth` recorded when rendering."""
        info = json.loads((top / self.info_file).read_text(encoding="utf-8"))
        return {split: tuple(info["statistics"][split]) for split in SPLITS}


class MSMT17(Dataset):
    """MSMT17 (Wei et al., "Person Transfer GAN to Bridge Domain Gap for Person Re-Identification", CVPR 2018).

    Official statistics (paper Table 1), ids / images: train 1041 / 30248 (`list_train.txt`; with `list_val.txt`
    32621 images), query 3060 / 11659, gallery 3060 / 82161. 15 cameras.
    Layout V1: `MSMT17_V1/{train,test}/` with `list_{train,val,query,gallery}.txt`, lines like
    `0000/0000_000_01_0303morning_0015_0.jpg 0` (path under train/ or test/, then the pid; the third underscore
    field is the camera, 1-based). pid 0 is a real identity. Layout V2: `MSMT17_V2/{mask_train_v2,mask_test_v2}/`
    with the same list files. Train and test pids are numbered independently (both start at 0).
    MSMT17 is released only after signing the authors' agreement (https://www.pkuvmc.com/dataset.html).
    """

    name = "msmt17"
    title = "MSMT17"
    top_folder = "MSMT17_V1"
    archive_name = "MSMT17_V1.tar.gz"
    how_to_obtain = (
        "MSMT17 is released only to those who sign the authors' agreement "
        "(https://www.pkuvmc.com/dataset.html) and arrives as MSMT17_V1.tar.gz"
    )
    layout = (
        "MSMT17_V1/ with train/, test/ and list_{train,val,query,gallery}.txt "
        "(or MSMT17_V2/ with mask_train_v2/, mask_test_v2/)"
    )
    official = {"train": (1041, 30248), "query": (3060, 11659), "gallery": (3060, 82161)}
    official_with_val: ClassVar[Statistics] = {"train": (1041, 32621), "query": (3060, 11659), "gallery": (3060, 82161)}
    image_folders: ClassVar[tuple[tuple[str, str], ...]] = (("train", "test"), ("mask_train_v2", "mask_test_v2"))
    num_cameras: ClassVar[int] = 15

    def __init__(self, include_val: bool = False) -> None:
        self.include_val = include_val  # add list_val.txt to the train split (the paper's Table 1 does not)

    def _folders(self, top: Path) -> tuple[str, str] | None:
        for train, test in self.image_folders:
            if (top / train).is_dir() and (top / test).is_dir():
                return train, test
        return None

    def is_top(self, folder: Path) -> bool:
        """A folder holding train/test (V1) or mask_train_v2/mask_test_v2 (V2) and the four list files."""
        lists = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
        return self._folders(folder) is not None and all((folder / name).is_file() for name in lists)

    def parse(self, top: Path) -> pd.DataFrame:
        """Rows from the list files: train from list_train (plus list_val when asked), query and gallery from test."""
        folders = self._folders(top)
        if folders is None:
            raise HavanaError(
                f"{top} has neither train/ and test/ (MSMT17_V1) nor mask_train_v2/ and mask_test_v2/ (MSMT17_V2)."
            )
        train_dir, test_dir = folders
        lists = [("list_train.txt", train_dir, "train")]
        if self.include_val:
            lists.append(("list_val.txt", train_dir, "train"))
        lists += [("list_query.txt", test_dir, "query"), ("list_gallery.txt", test_dir, "gallery")]
        rows = []
        for list_name, image_dir, split in lists:
            try:
                text = (top / list_name).read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise HavanaError(
                    f"{list_name} under {top} is not UTF-8 text (byte {exc.start}); the list file is "
                    "damaged, so extract the archive again."
                ) from None
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    rows.append(self._row(line, top, list_name, number, image_dir, split))
        return make_manifest(rows)

    def _row(self, line: str, top: Path, list_name: str, number: int, image_dir: str, split: str) -> tuple:
        where = f"{list_name} line {number}"
        try:
            relative, label = line.split()
            pid = int(label)
            camera = int(Path(relative).name.split("_")[2])
        except (ValueError, IndexError):
            raise HavanaError(
                f"{where} reads {line.strip()!r}, not '<folder>/<pid>_<n>_<camera>_... <pid>'; "
                "the list file is damaged, so extract the archive again."
            ) from None
        if not 1 <= camera <= self.num_cameras:
            raise HavanaError(
                f"{where} names camera {camera}, but MSMT17 has cameras 1..{self.num_cameras}; "
                "the list file is damaged, so extract the archive again."
            )
        path = f"{image_dir}/{relative}"
        if not (top / path).is_file():
            raise HavanaError(
                f"{where} lists {path}, which is missing under {top}; extract the complete archive again."
            )
        return (path, pid, camera - 1, split)

    def expected_statistics(self, top: Path) -> Statistics:
        """Table 1's statistics; the train images grow to 32621 when list_val is included."""
        return self.official_with_val if self.include_val else self.official


DATASETS: dict[str, type[Dataset]] = {
    "market1501": Market1501,
    "dukemtmc": DukeMTMCReID,
    "msmt17": MSMT17,
    "synthetic": Synthetic,
}


def get_dataset(name: str) -> type[Dataset]:
    """The dataset class registered under `name`, or HavanaError listing the valid names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise HavanaError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}.") from None


def dataset_title(name: str | None) -> str:
    """The paper's spelling of a registered dataset's name (unregistered names shown as given)."""
    return DATASETS[name].title if name in DATASETS else (name or "")


def is_synthetic(name: str) -> bool:
    """Whether dataset `name` is rendered by `havana synth` rather than obtained as an archive."""
    return get_dataset(name).synthetic


def make_manifest(rows: list[tuple[str, int, int, str]]) -> pd.DataFrame:
    """A manifest DataFrame from (path, pid, camid, split) rows, ordered by split (train, query, gallery) then path."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    frame = frame.astype({"path": str, "pid": "int64", "camid": "int64", "split": str})
    order = frame["split"].map({split: i for i, split in enumerate(SPLITS)})
    return (
        frame.assign(_order=order)
        .sort_values(["_order", "path"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def split_statistics(manifest: pd.DataFrame) -> Statistics:
    """(number of ids, number of images) per split."""
    return {
        split: (int(part["pid"].nunique()), len(part))
        for split in SPLITS
        for part in [manifest[manifest["split"] == split]]
    }


def write_manifest(path: str | os.PathLike, manifest: pd.DataFrame) -> None:
    """Write `manifest` as CSV atomically (columns path,pid,camid,split)."""
    with atomic.atomic_path(path) as tmp:
        manifest.loc[:, list(MANIFEST_COLUMNS)].to_csv(tmp, index=False)


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest CSV, checking its columns and split names; HavanaError when it is missing or malformed."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise HavanaError(
            f"manifest {path} does not exist; create it with `havana prepare DATASET --root DIR --archive FILE`."
        )
    try:
        frame = pd.read_csv(path, dtype={"path": str, "split": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise HavanaError(
            f"manifest {path} is not a readable CSV ({exc.__class__.__name__}); run `havana prepare` again."
        ) from None
    if list(frame.columns) != list(MANIFEST_COLUMNS):
        raise HavanaError(
            f"manifest {path} has columns {list(frame.columns)}, expected {list(MANIFEST_COLUMNS)}; "
            "run `havana prepare` again."
        )
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise HavanaError(f"manifest {path} has unknown split(s) {bad}; splits are {', '.join(SPLITS)}.")
    try:
        return frame.astype({"pid": "int64", "camid": "int64"})
    except (ValueError, TypeError):
        raise HavanaError(f"manifest {path} has non-integer pid or camid values; run `havana prepare` again.") from None
