"""Reports: JSON that round-trips, a Markdown summary and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from mess_ros.config import SegmentationConfig
from mess_ros.data.sample import Sample
from mess_ros.eval import report as report_module
from mess_ros.eval.bag_writer import write_bag
from mess_ros.eval.errors import EvalError
from mess_ros.eval.offline import OfflineOptions, evaluate_offline
from mess_ros.eval.report import (
    PLOT_NAMES,
    ground_truth_notes,
    load_report,
    markdown_summary,
    write_report,
)
from mess_ros.eval.results import Evaluation
from mess_ros.eval.runs import build_runs

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
    # No ground truth scored: no empty IoU chart, and the summary says why.
    assert "iou" not in files.plots and not (tmp_path / "bare" / PLOT_NAMES["iou"]).exists()
    assert json.loads(files.json.read_text())["runs"][0]["summary"]["miou"] is None
    text = files.markdown.read_text()
    assert "| final | – |" in text
    assert "accuracy was not measured" in text


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


@pytest.fixture
def foreign_bag(tmp_path: Path, samples: list[Sample]) -> Path:
    """The small bag with class id 200 in the ground truth of frames 1 and 4."""
    changed = []
    for index, sample in enumerate(samples):
        mask = sample.mask.copy()
        if index in (1, 4):
            mask[:3, :3] = 200
        changed.append(Sample(sample.image, mask, sample.difficulty, sample.name))
    path = tmp_path / "foreign.mcap"
    write_bag(path, changed)
    return path


def test_ground_truth_outside_the_label_set_is_reported(
    foreign_bag: Path, base_config: SegmentationConfig
) -> None:
    specs = build_runs(base_config, ["final"])
    evaluation = evaluate_offline(foreign_bag, specs, OfflineOptions(progress=False))
    summary = evaluation.runs[0].summary()
    assert (summary.invalid_gt, summary.invalid_gt_ids, summary.scored) == (2, [200], 6)
    (note,) = ground_truth_notes(evaluation)
    assert "2 of 8 frames have ground truth with class ids [200] outside label set" in note
    text = markdown_summary(evaluation)
    assert f"- **ground truth**: {note}" in text


def test_unmatched_ground_truth_and_candidates_are_said_in_the_summary(
    evaluation: Evaluation,
) -> None:
    evaluation.read["unmatched_gt"] = 3
    evaluation.read["bad_gt"] = {"ground truth size mismatch": 2}
    notes = ground_truth_notes(evaluation)
    assert any("2 frames have unusable ground truth on /camera/ground_truth" in n for n in notes)
    assert any("3 ground-truth messages on /camera/ground_truth matched no" in n for n in notes)
    evaluation.topics["ground_truth"] = None
    evaluation.topics["gt_candidates"] = ["/cam/semantic"]
    text = markdown_summary(evaluation)
    assert "pass --gt-topic /cam/semantic" in text


def captured_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """The figures write_report draws, by file name, instead of only their PNGs."""
    figures: dict[str, Figure] = {}
    save = report_module._save

    def keep(fig: Figure, path: Path) -> Path:
        figures[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(report_module, "_save", keep)
    return figures


def test_plots_tell_apart_what_looks_alike(
    tmp_path: Path,
    small_bag: Path,
    base_config: SegmentationConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    figures = captured_figures(monkeypatch)
    specs = build_runs(base_config, ["final@40", "confidence@40", "deadline@25"])
    evaluation = evaluate_offline(small_bag, specs, OfflineOptions(progress=False, examples=2))
    # The last class in neither ground truth nor masks of the first run: it has no IoU there.
    for confusion in evaluation.runs[0].confusions.values():
        confusion[-1, :] = 0
        confusion[:, -1] = 0
    write_report(evaluation, tmp_path / "report")

    # One deadline line per configuration, each in its configuration's colour and dash.
    ax = figures[PLOT_NAMES["latency"]].axes[0]
    deadline_lines = [line for line in ax.get_lines() if " deadline " in str(line.get_label())]
    assert [line.get_label() for line in deadline_lines] == [
        "final@40 deadline 40 ms",
        "confidence@40 deadline 40 ms",
        "deadline@25 deadline 25 ms",
    ]
    styles = {(str(line.get_color()), str(line.get_linestyle())) for line in deadline_lines}
    assert len(styles) == 3

    # The examples carry a colour key naming every class.
    (legend,) = figures[PLOT_NAMES["examples"]].legends
    assert [t.get_text() for t in legend.get_texts()] == list(evaluation.labels.class_names)

    # IoU 0 is labelled "0"; a class without an IoU gets a hatched column instead.
    ax = figures[PLOT_NAMES["iou"]].axes[0]
    summaries = [run.summary() for run in evaluation.runs]
    values = [v for s in summaries for v in s.iou_per_class.values()]
    assert None in values and 0.0 in values  # both cases occur on these frames
    hatched = [p for p in ax.patches if p.get_hatch() == "//"]
    assert len(hatched) == sum(v is None for v in values)
    zeros = [t for t in ax.texts if t.get_text() == "0"]
    assert len(zeros) == sum(v == 0.0 for v in values)
