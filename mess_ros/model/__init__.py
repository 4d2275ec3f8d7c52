"""The multi-exit segmentation network: backbones, exit heads, MESSNet, checkpoints.

Other subsystems import from here rather than from the modules, so that the
model's internal layout can change without touching them.
"""

from __future__ import annotations

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.model.backbones import (
    BACKBONES,
    OUTPUT_STRIDES,
    Backbone,
    BackboneSpec,
    BasicBlock,
    Bottleneck,
    PointInfo,
    build_backbone,
)
from mess_ros.model.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Checkpoint,
    load_checkpoint,
    model_fingerprint,
    prune_checkpoint,
    save_checkpoint,
)
from mess_ros.model.complexity import ComplexityRow, format_complexity, model_complexity
from mess_ros.model.errors import CheckpointError, ModelError, WeightImportError
from mess_ros.model.heads import EXIT_HEADS, ExitHead, HeadSpec, build_head, default_head_pool
from mess_ros.model.messnet import ExitSpec, MESSNet, ModelSpec
from mess_ros.model.outputs import (
    CLASS_CONFIDENCE_BINS,
    CONFIDENCE_BINS,
    class_confidence_histogram,
    confidence_histogram,
    confident_share,
    logits_to_mask,
    threshold_bin,
    top1,
    top1_probability,
)

__all__ = [
    "BACKBONES",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CLASS_CONFIDENCE_BINS",
    "CONFIDENCE_BINS",
    "EXIT_HEADS",
    "FINAL_EXIT",
    "OUTPUT_STRIDES",
    "Backbone",
    "BackboneSpec",
    "BasicBlock",
    "Bottleneck",
    "Checkpoint",
    "CheckpointError",
    "ComplexityRow",
    "ExitHead",
    "ExitSpec",
    "HeadSpec",
    "MESSNet",
    "ModelError",
    "ModelSpec",
    "PointInfo",
    "WeightImportError",
    "build_backbone",
    "build_head",
    "class_confidence_histogram",
    "confidence_histogram",
    "confident_share",
    "default_head_pool",
    "format_complexity",
    "load_checkpoint",
    "logits_to_mask",
    "model_complexity",
    "model_fingerprint",
    "prune_checkpoint",
    "save_checkpoint",
    "threshold_bin",
    "top1",
    "top1_probability",
]
