"""Converting an existing segmentation network into a MESS network (``mess_convert``).

The method's promise is to add early exits to a network people already
have, without training it again. A conversion is a training run of mode
``convert``: the source network's backbone and final head are loaded and
frozen exactly as they are, and only stage 2 runs, which trains the pool of
candidate exit heads with cross-entropy plus positive-filtering distillation
from that (unchanged) final head. The run directory it leaves is an ordinary
one, so profiling, the deployment search, the node and the evaluator take it
unchanged, and its final exit is the source network, prediction for
prediction.

Sources:

* a torchvision DeepLabV3 or FCN state dict (:mod:`mess_ros.model.importing`),
  whose output stride and input normalisation the user states (torchvision's
  are 8 and the ImageNet statistics, the defaults);
* a mess_ros checkpoint or run directory, such as a single-exit baseline;
  its own training configuration is the default base of the conversion's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from mess_ros.data.labels import LabelSet
from mess_ros.errors import MessError
from mess_ros.model.backbones import Triple
from mess_ros.model.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from mess_ros.model.importing import import_network, load_payload, state_dict_of
from mess_ros.model.messnet import MESSNet, ModelSpec
from mess_ros.normalization import IMAGENET_MEAN, IMAGENET_STD
from mess_ros.train.config import CONVERT_MODE, TrainConfig
from mess_ros.train.errors import TrainError
from mess_ros.train.rundir import RunDir

TORCHVISION_OUTPUT_STRIDE = 8
"""The output stride torchvision's DeepLabV3 and FCN builders use."""


@dataclass(frozen=True)
class SourceNetwork:
    """The network a conversion starts from: its spec (no exits), weights and origin.

    ``labels`` and ``config`` are the label set and training configuration a
    mess_ros source recorded (None for a torchvision file).
    """

    spec: ModelSpec
    state: dict[str, Tensor]
    description: str
    labels: dict[str, Any] | None = None
    config: TrainConfig | None = None

    @property
    def from_mess_ros(self) -> bool:
        """Whether the source is a mess_ros network (which records its stride and statistics)."""
        return self.labels is not None


def read_source(
    path: Path,
    *,
    output_stride: int = TORCHVISION_OUTPUT_STRIDE,
    input_mean: Triple = IMAGENET_MEAN,
    input_std: Triple = IMAGENET_STD,
    num_classes: int | None = None,
) -> SourceNetwork:
    """The network at ``path``: a mess_ros run directory or checkpoint, or a torchvision file.

    The output stride and input statistics describe a torchvision file (the
    defaults are torchvision's); a mess_ros source records its own.
    ``num_classes``, when given, is checked against a torchvision file's classifier.
    """
    path = Path(path)
    if path.is_dir():
        return _read_mess_source(RunDir(path).checkpoint_path, run_dir=path)
    payload = load_payload(path)
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        del payload  # load_checkpoint reads it again, with all of its checks
        return _read_mess_source(path, run_dir=None)
    where = str(path)
    state = state_dict_of(payload, where)
    imported = import_network(state, where, num_classes, output_stride, input_mean, input_std)
    return SourceNetwork(
        spec=imported.spec,
        state=imported.state,
        description=f"{imported.layout.describe()} in torchvision's layout, {path}",
    )


def _read_mess_source(checkpoint_path: Path, run_dir: Path | None) -> SourceNetwork:
    if run_dir is not None and not checkpoint_path.is_file():
        raise TrainError(
            f"{str(run_dir)!r} is a directory without checkpoint.pt: the source network must be "
            "a finished mess_ros run, a mess_ros checkpoint or a torchvision weights file"
        )
    checkpoint = load_checkpoint(checkpoint_path)
    # Only the backbone and the final head are the source network; stage 2 trains new exits.
    model = checkpoint.model.keep_exits([])
    config = (
        RunDir(run_dir).saved_config()
        if run_dir is not None
        else _recorded_config(checkpoint.train_config, checkpoint_path)
    )
    dropped = len(checkpoint.model.exit_ids) - 1
    note = f", its {dropped} exit head(s) left out" if dropped else ""
    return SourceNetwork(
        spec=model.spec,
        state=model.state_dict(),
        description=f"mess_ros network {checkpoint_path}{note}",
        labels=checkpoint.labels,
        config=config,
    )


def _recorded_config(data: dict[str, Any], path: Path) -> TrainConfig | None:
    """The training configuration a checkpoint records, when it is a full one."""
    try:
        return TrainConfig.from_dict(data, source=f"training config of {path}")
    except MessError:
        return None


def conversion_config(base: TrainConfig, source: SourceNetwork, source_path: Path) -> TrainConfig:
    """``base`` turned into the conversion of ``source``: mode, network and steps.

    Everything about the data, the head pool and stage 2 comes from ``base``;
    everything about the network comes from the source.
    """
    config = dataclasses.replace(
        base,
        mode=CONVERT_MODE,
        source_network=str(source_path),
        backbone_weights="",
        backbone=source.spec.backbone,
        final_head=source.spec.final_head.name,
        num_classes=source.spec.num_classes,
        stage1_steps=0,
    )
    config.validate("conversion")
    return config


def load_source_model(config: TrainConfig, labels: LabelSet) -> MESSNet:
    """The network a conversion run starts from, checked against its config and label set."""
    path = Path(config.source_network)
    backbone = config.backbone
    try:
        source = read_source(
            path,
            output_stride=backbone.output_stride,
            input_mean=backbone.input_mean,
            input_std=backbone.input_std,
            num_classes=labels.num_classes,
        )
    except MessError as err:
        raise TrainError(f"source_network: {err}") from err
    if source.labels is not None and LabelSet.from_dict(source.labels) != labels:
        theirs = LabelSet.from_dict(source.labels)
        raise TrainError(
            f"source_network {str(path)!r} predicts label set {theirs.name!r} "
            f"({', '.join(theirs.class_names)}) but the dataset's is {labels.name!r} "
            f"({', '.join(labels.class_names)}); convert it on data of its own label set"
        )
    described = (config.backbone, config.final_head)
    if (source.spec.backbone, source.spec.final_head.name) != described:
        raise TrainError(
            f"the run's config describes backbone {config.backbone.to_dict()} with final head "
            f"{config.final_head!r}, but source_network {str(path)!r} is "
            f"{source.spec.to_dict()}; start the conversion again with mess_convert"
        )
    model = MESSNet(source.spec)
    model.load_state_dict(source.state)
    return model.eval()
