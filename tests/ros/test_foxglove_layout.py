"""The sample Foxglove layout shows the topics a three-camera node really has."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tests.ros.conftest import REPO

LAYOUT = REPO / "config" / "foxglove_multicamera.json"
CAMERAS = ("front", "left", "right")


def panels(tree: Any) -> Iterator[str]:
    """Panel ids of a layout tree (nested splits with a panel id at each leaf)."""
    if isinstance(tree, str):
        yield tree
    else:
        yield from panels(tree["first"])
        yield from panels(tree["second"])


def test_every_panel_is_placed_and_names_a_topic_of_the_node() -> None:
    layout = json.loads(LAYOUT.read_text())
    configs = layout["configById"]
    assert sorted(panels(layout["layout"])) == sorted(configs)
    topics = set()
    for panel_id, config in configs.items():
        kind = panel_id.split("!")[0]
        if kind == "Image":
            topics.add(config["imageMode"]["imageTopic"])
        elif kind == "RawMessages":
            topics.add(config["topicPath"].split(".")[0])
        else:
            assert kind == "DiagnosticSummary" and config["topicToRender"] == "/diagnostics"
    per_camera = {f"/{c}/{t}" for c in CAMERAS for t in ("image", "mask_overlay", "exit_info")}
    assert topics == per_camera | {"/labels"}
