"""Reports: JSON that round-trips, a Markdown summary and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mess_ros.eval.errors import EvalError
from mess_ros.eval.offline import OfflineOptions, evaluate_offline
from mess_ros.eval.report import PLOT_NAMES, load_report, markdown_summary, write_report
from mess_ros.eval.results import Evaluation
from mess_ros.eval.runs import build_runs
from mess_ros.runtime.config import SegmentationConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def evaluation(small_bag: Path, base_config: SegmentationConfig) -> Evaluation:
    base_config.policy.image_thresholds = [0.0]
    specs = build_runs(base_config, ["final", "confidence@30"])
    return evaluate_offline(small_bag, specs, OfflineOptions(progress=False, examples=3))


def test_report_files(tmp_path: Path, evaluation: Evaluation) -> None:
    files = write_report(evaluation, tmp_path / "report")
    assert set(files.plots) == set(PLOT_NAMES)
    for path in files.plots.values():
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert path.stat().st_size > 5_000
    data = load_report(files.json)
    assert data == json.loads(json.dumps(evaluation.to_dict()))
    summaries = {run["summary"]["name"]: run["summary"] for run in data["runs"]}
    assert set(summaries) == {"final", "confidence@30"}
    assert summaries["final"]["miou"] == pytest.approx(evaluation.runs[0].summary().miou)
    assert len(data["runs"][1]["frames"]) == 8
    assert data["runs"][1]["parameters"]["deadline.deadline_ms"] == 30.0
    text = files.markdown.read_text(encoding="utf-8")
    assert "| final |" in text and "| confidence@30 |" in text
    assert "`layer1_0:linear`" in text
    for name in PLOT_NAMES.values():
        assert f"({name})" in text


def test_markdown_numbers_match_the_summary(evaluation: Evaluation) -> None:
    text = markdown_summary(evaluation)
    final = evaluation.runs[0].summary()
    assert final.miou is not None
    assert f"| final | {100 * final.miou:.2f} |" in text
    assert "frames: 8 used, 0 skipped, 0 without ground truth" in text
    for name in evaluation.labels.class_names:
        assert f"| {name} |" in text


def test_report_without_examples_or_ground_truth(tmp_path: Path, evaluation: Evaluation) -> None:
    evaluation.examples = []
    for run in evaluation.runs:
        run.confusions.clear()
    files = write_report(evaluation, tmp_path / "bare")
    assert "examples" not in files.plots
    assert json.loads(files.json.read_text())["runs"][0]["summary"]["miou"] is None
    assert "| final | – |" in files.markdown.read_text()


def test_unwritable_report_directory_is_an_eval_error(
    tmp_path: Path, evaluation: Evaluation
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(EvalError, match="cannot create report directory"):
        write_report(evaluation, blocker / "report")


def test_load_report_rejects_other_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"hello": np.arange(2).tolist()}))
    with pytest.raises(EvalError, match=r"x\.json is not an evaluation report"):
        load_report(path)
    with pytest.raises(EvalError, match="cannot read report"):
        load_report(tmp_path / "missing.json")
