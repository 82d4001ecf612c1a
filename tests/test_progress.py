"""Progress in logs: one plain timestamped line per epoch (no carriage return) when stderr is a file, a tqdm bar
only on a terminal; the head engine uses it (the extractor's epoch lines are checked in test_train_extractor)."""

from __future__ import annotations

import dataclasses
import io
import re

import torch
from test_train_head import ROW, TRAIN, fix_query_gallery, synthetic_features

from havana.engine.train_head import HeadRun, train_heads
from havana.utils.progress import Progress, format_duration, progress

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?P<desc>.+?): (?P<unit>\S+) (?P<done>\d+)/(?P<total>\d+) "
    r"\(\d+%\) \| (?P<rest>.*)$"
)


def epoch_lines(err: str, desc: str) -> list[re.Match]:
    """The progress lines of `desc` in a captured stderr, after checking that it holds no carriage return."""
    assert "\r" not in err
    return [match for match in map(LINE.match, err.splitlines()) if match and match["desc"] == desc]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_per_update_with_fields_rate_and_eta():
    stream = io.StringIO()
    with Progress("train-head havana seed0", 4, unit="epoch", initial=1, every_s=0, stream=stream) as shown:
        for epoch in range(1, 4):
            shown.update(1, total=1.0 / epoch, lr=1e-5)
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [LINE.match(line)["done"] for line in lines] == ["2", "3", "4"]  # resumed at 1: no line for epoch 1
    assert all(LINE.match(line)["total"] == "4" for line in lines)
    assert "total 0.3333, lr 1e-05" in lines[2] and "ETA" in lines[0] and "elapsed" in lines[0]


def test_batch_level_lines_are_rate_limited_and_the_last_one_is_always_written():
    stream = io.StringIO()
    assert list(progress(range(100), "extract query", unit="batch", every_s=3600, stream=stream)) == list(range(100))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and LINE.match(lines[0])["done"] == "100"
    quiet = io.StringIO()
    with Progress("epoch 1/2", 5, unit="batch", every_s=3600, final_line=False, stream=quiet) as shown:
        shown.update(5)
    assert quiet.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar():
    stream = Terminal()
    with Progress("synth", 3, unit="img", stream=stream) as shown:
        shown.update(3)
    assert "\r" in stream.getvalue() and "3/3" in stream.getvalue() and not LINE.search(stream.getvalue())


def test_format_duration():
    assert (
        format_duration(3723.4) == "1:02:03"
        and format_duration(float("nan")) == "?"
        and format_duration(59.6) == "0:01:00"
    )


def test_head_training_logs_one_line_per_epoch_without_carriage_returns(tmp_path, capfd):
    torch.set_num_threads(1)
    features = fix_query_gallery(synthetic_features(train_ids=16, test_ids=6, per_id=4))
    train = dataclasses.replace(TRAIN, epochs=3, p=4, k=2)
    train_heads(
        features,
        ROW,
        train,
        [HeadRun(tmp_path / f"seed{s}", "havana", "synthetic", seed=s) for s in (1, 2)],
        torch.device("cpu"),
    )  # two heads stacked in one job: one line per head and epoch
    err = capfd.readouterr().err
    for seed in (1, 2):
        epochs = epoch_lines(err, f"train-head havana seed{seed}")
        assert [m["done"] for m in epochs] == ["1", "2", "3"]
        for term in ("total", "cls", "jst", "reconx", "klz", "reconz", "klv", "lr", "images/s"):
            assert f"{term} " in epochs[-1]["rest"], term
