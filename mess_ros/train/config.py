"""Training configuration: one dataclass, three presets, YAML in and out.

The configuration is written into every run directory (``config.yaml``) and
into the checkpoint, so a model can always be traced back to how it was
trained and a run can be resumed with exactly the settings it started with.
Loading is strict: an unknown key or a value of the wrong type is an error
naming the file and the key, because a silently ignored typo in a training
config costs a training run.

Presets
-------
``tiny``
    Seconds on one CPU core; used by the tests. ResNet-10 of width 8 on 32x64
    synthetic images, two heads in the pool.
``default``
    The model bundled under ``models/`` (``make model``). ResNet-18 of base
    width 32 (a quarter of the classic ResNet-18's compute) at output stride
    8, 128x256 input, trained on the synthetic robot-camera scenes: 2400
    stage-1 steps then 2000 stage-2 steps of batch 16, losses at half label
    resolution. Output stride 8 matters at this input size: at 16 the deep
    layers see a 8x16 map and the final exit ends up less accurate than
    exits at stride 8. Stage 1 runs long because the deep exits gain more
    from it than the shallow ones, and hard scenes are where depth has to
    pay off: doubling it from 1200 steps raised the final exit by 3.3 points
    on hard held-out scenes and the best head at the first point by 2.0
    (measured on the hard level before its texture period was widened). On
    an idle 2-core CPU a stage-1 step takes about 1.2 s and a stage-2 step
    1.1 s (the whole head pool at label resolution): about 50 + 36 minutes,
    and the calibration of 29 exits on the 240 validation images one more.
    Stage 2 runs long because the exit decisions only pay off when the
    early exits are nearly as good as the final one: after 500 steps the
    heads were still improving (``layer1_1:fcn_c32_k2_d2`` 77.1 % mIoU,
    79.7 after 2000, on 720 validation scenes), and the search's speed-up at
    equal accuracy follows them. The head pool (:func:`mess_ros.model.heads.default_head_pool`
    with 32 channels: a 1x1 classifier, two FCN heads and an ASPP-lite head)
    sits at each of the 7 candidate points: 28 candidate exits, so that the
    deployment search has real choices between cost and accuracy.
``ablation``
    The default recipe at base width 16 and half the resolution (64x128),
    batch 8, 1200 stage-1 steps and 2000 stage-2 steps, for the comparison
    of two-stage training with the single-exit and naive joint baselines
    (``make ablation``: three runs of minutes each).

Pretrained weights
------------------
``backbone_weights`` names a ResNet state dict in torchvision's layout
(``mess_train --backbone-weights``) that the backbone starts from instead of
random weights. Mode ``convert`` (``mess_convert``) trains no backbone at
all: ``source_network`` names an existing segmentation network (a torchvision
DeepLabV3/FCN file or a mess_ros checkpoint or run), whose backbone and final
head are frozen as they are, and only stage 2 runs; ``stage1_steps`` is 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, get_args, get_origin, get_type_hints

import yaml

from mess_ros.config.checks import Checks
from mess_ros.data.datasets import DatasetSpec
from mess_ros.errors import MessError
from mess_ros.model.backbones import BackboneSpec
from mess_ros.model.heads import HeadSpec, default_head_pool
from mess_ros.textfiles import read_text, write_text_atomically
from mess_ros.train.device import AMP_MODES
from mess_ros.train.errors import TrainError

TRAIN_MODES = ("two_stage", "single_exit", "naive_joint")
"""Modes that train a backbone (``mess_train --mode``)."""
CONVERT_MODE = "convert"
MODES = (*TRAIN_MODES, CONVERT_MODE)
# Hidden channels of the FCN and ASPP-lite heads of the default pool.
DEFAULT_HEAD_CHANNELS = 32


def _pool_names(channels: int) -> list[str]:
    return [head.name for head in default_head_pool(channels)]


@dataclass
class TrainConfig:
    """Everything that determines a training run (and nothing about where it is written).

    Steps, not epochs, measure training: the synthetic dataset is generated on
    the fly and has no natural epoch, and a step count gives the same budget
    whatever the dataset size.
    """

    dataset: DatasetSpec
    val_dataset: DatasetSpec
    input_hw: tuple[int, int] = (128, 256)
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    # 0 takes the class count of the dataset's label set; otherwise it must match it.
    num_classes: int = 0
    final_head: str = "deeplabv3_c128"
    # Light heads attached at every candidate point during stage 1 (exit-aware backbone).
    stage1_head: str = "linear"
    # Stage 2 trains every one of these head architectures at every candidate point.
    head_pool: list[str] = field(default_factory=lambda: _pool_names(DEFAULT_HEAD_CHANNELS))
    mode: str = "two_stage"
    # ResNet weights (torchvision layout) the backbone starts from; "" = random initialisation.
    backbone_weights: str = ""
    # Mode "convert": the network whose backbone and final head are kept (file or run dir).
    source_network: str = ""
    # Backbone steps of every mode (stage 1, single_exit and naive_joint alike; 0 in convert).
    stage1_steps: int = 1200
    stage2_steps: int = 500
    batch_size: int = 16
    lr: float = 2e-3
    # Fresh heads on a frozen backbone take a higher rate than the backbone does.
    stage2_lr: float = 1e-2
    weight_decay: float = 1e-2
    warmup_steps: int = 50
    grad_clip: float = 0.0
    # Stage-1 loss weights of the shallowest and deepest intermediate exits (linear in
    # depth between them); the final exit always weighs 1.0, the most of all.
    exit_loss_weights: tuple[float, float] = (0.1, 0.4)
    distill_weight: float = 1.0
    distill_temperature: float = 2.0
    # Losses are computed on labels subsampled by this factor (1 = full label resolution).
    # Up to the finest exit's stride (4) no exit's logits lose detail, only labels do;
    # 2 makes the label-resolution losses of a large head pool 4x cheaper.
    loss_stride: int = 1
    augment: bool = True
    scale_range: tuple[float, float] = (0.75, 1.25)
    hflip: bool = True
    color_jitter: float = 0.2
    eval_every: int = 250
    # Images of the validation split used by periodic validation (0 = all of them).
    val_images: int = 48
    checkpoint_every: int = 250
    seed: int = 0
    device: str = "cpu"
    amp: str = "off"
    workers: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML/JSON/``torch.load(weights_only=True)`` safe)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (DatasetSpec, BackboneSpec)):
                out[f.name] = value.to_dict()
            elif isinstance(value, (tuple, list)):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        return out

    @classmethod
    def scalar_defaults(cls) -> dict[str, Any]:
        """The defaults of the fields that have a plain default value."""
        return {
            f.name: f.default
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], base: TrainConfig | None = None, source: str = "config"
    ) -> TrainConfig:
        """Build a config from plain data, optionally as overrides on top of ``base``.

        Nested mappings (``dataset``, ``backbone``...) are merged key by key
        into the base, so a YAML file can change one dataset field without
        repeating the others; except a dataset of another ``kind``, which
        replaces the base's entirely (a synthetic preset's ``num_images``
        must not silently cap a folder dataset). ``source`` (usually the file
        name) prefixes every error message.
        """
        if not isinstance(data, Mapping):
            raise TrainError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
        merged = base.to_dict() if base is not None else {}
        valid = {f.name for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if key not in valid:
                msg = f"{source}: unknown key {key!r}; valid keys: {', '.join(sorted(valid))}"
                raise TrainError(msg)
            previous = merged.get(key)
            if isinstance(value, Mapping) and isinstance(previous, Mapping):
                other_kind = "kind" in value and value["kind"] != previous.get("kind")
                merged[key] = dict(value) if other_kind else {**previous, **value}
            else:
                merged[key] = value
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in merged
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise TrainError(f"{source}: missing required key(s): {', '.join(missing)}")
        kwargs = {
            key: _PARSERS[key](value, f"{source}: key {key!r}") for key, value in merged.items()
        }
        config = cls(**kwargs)
        config.validate(source)
        return config

    def validate(self, source: str = "config") -> None:
        """Reject settings that would only fail (or silently misbehave) mid-run."""

        def fail(key: str, problem: str) -> None:
            raise TrainError(f"{source}: key {key!r} {problem}")

        if self.mode not in MODES:
            fail("mode", f"is {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.amp not in AMP_MODES:
            fail("amp", f"is {self.amp!r}; expected one of {', '.join(AMP_MODES)}")
        if min(self.input_hw) < 16:
            fail("input_hw", f"is {list(self.input_hw)}; both sides must be >= 16 pixels")
        if self.batch_size < 1:
            fail("batch_size", f"is {self.batch_size}; must be >= 1")
        if self.mode == CONVERT_MODE:
            self._validate_conversion(fail)
        else:
            if self.stage1_steps < 1:
                fail("stage1_steps", f"is {self.stage1_steps}; must be >= 1")
            if self.source_network:
                fail("source_network", f"is set, but only mode {CONVERT_MODE!r} converts a network")
        for key in ("stage2_steps", "warmup_steps", "num_classes", "val_images", "workers"):
            if getattr(self, key) < 0:
                fail(key, f"is {getattr(self, key)}; must be >= 0")
        for key in ("eval_every", "checkpoint_every", "loss_stride"):
            if getattr(self, key) < 1:
                fail(key, f"is {getattr(self, key)}; must be >= 1")
        for key in ("lr", "stage2_lr", "distill_temperature"):
            if not getattr(self, key) > 0:
                fail(key, f"is {getattr(self, key)}; must be > 0")
        for key in ("weight_decay", "grad_clip", "distill_weight", "color_jitter"):
            if getattr(self, key) < 0:
                fail(key, f"is {getattr(self, key)}; must be >= 0")
        if min(self.exit_loss_weights) < 0:
            fail("exit_loss_weights", f"is {list(self.exit_loss_weights)}; must be >= 0")
        low, high = self.scale_range
        if not 0 < low <= high:
            fail("scale_range", f"is {[low, high]}; expected 0 < low <= high")
        if self.mode != "single_exit" and not self.head_pool:
            fail("head_pool", f"is empty; mode {self.mode!r} needs at least one head")
        for key, names in (
            ("final_head", [self.final_head]),
            ("stage1_head", [self.stage1_head]),
            ("head_pool", self.head_pool),
        ):
            for name in names:
                try:
                    HeadSpec.parse(name)
                except MessError as err:
                    raise TrainError(f"{source}: key {key!r}: {err}") from err
        if len(set(self.head_pool)) != len(self.head_pool):
            fail("head_pool", f"lists a head twice: {self.head_pool}")

    def _validate_conversion(self, fail: Callable[[str, str], None]) -> None:
        if not self.source_network:
            fail("source_network", f"is empty; mode {CONVERT_MODE!r} converts a given network")
        if self.stage1_steps != 0:
            fail("stage1_steps", f"is {self.stage1_steps}; a conversion trains no backbone (0)")
        if self.stage2_steps < 1:
            fail("stage2_steps", f"is {self.stage2_steps}; a conversion trains exit heads (>= 1)")
        if self.backbone_weights:
            fail("backbone_weights", "is set; a conversion keeps the source network's backbone")

    def yaml_text(self) -> str:
        """The config as YAML that :func:`load_config` reads back identically."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def to_yaml(self, path: Path) -> None:
        write_text_atomically(path, self.yaml_text())


def load_config(path: Path, base: TrainConfig | None = None) -> TrainConfig:
    """Read a YAML config file (overrides on top of ``base`` when given)."""
    text = read_text(path, "config file", "a YAML training config", TrainError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise TrainError(f"config file {str(path)!r} is not valid YAML: {err}") from err
    if data is None:
        data = {}
    return TrainConfig.from_dict(data, base=base, source=f"config file {str(path)!r}")


def preset(name: str) -> TrainConfig:
    """A fresh copy of a named preset."""
    try:
        factory = PRESETS[name]
    except KeyError as err:
        msg = f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}"
        raise TrainError(msg) from err
    return factory()


def tiny_preset() -> TrainConfig:
    """Seconds on one core: for tests and for trying the pipeline end to end."""
    return TrainConfig(
        dataset=DatasetSpec(kind="synthetic", split="train", num_images=32, height=32, width=64),
        val_dataset=DatasetSpec(kind="synthetic", split="val", num_images=8, height=32, width=64),
        input_hw=(32, 64),
        backbone=BackboneSpec(name="resnet10", base_width=8, output_stride=16),
        final_head="deeplabv3_c16",
        head_pool=_pool_names(8),
        stage1_steps=12,
        stage2_steps=8,
        batch_size=4,
        lr=5e-3,
        stage2_lr=5e-3,
        warmup_steps=2,
        eval_every=6,
        val_images=4,
        checkpoint_every=4,
    )


def default_preset() -> TrainConfig:
    """The bundled default model (see the module docstring for its budget)."""
    return TrainConfig(
        dataset=DatasetSpec(
            kind="synthetic", split="train", num_images=20000, height=128, width=256
        ),
        val_dataset=DatasetSpec(
            kind="synthetic", split="val", num_images=240, height=128, width=256
        ),
        input_hw=(128, 256),
        backbone=BackboneSpec(name="resnet18", base_width=32, output_stride=8),
        loss_stride=2,
        stage1_steps=2400,
        stage2_steps=2000,
    )


def ablation_preset() -> TrainConfig:
    """The default recipe at half the width and half the resolution.

    Comparing two-stage training with its baselines takes three trainings of
    the same recipe; naive joint training back-propagates through every head
    of the pool at every step, which at the default scale costs hours on a
    CPU. At this scale all three runs take minutes, with the same losses and
    head pool as the default preset and the same backbone steps in each
    mode (half the default's).
    """
    config = default_preset()
    config.dataset = replace(config.dataset, height=64, width=128)
    config.val_dataset = replace(config.val_dataset, height=64, width=128)
    config.input_hw = (64, 128)
    config.backbone = BackboneSpec(name="resnet18", base_width=16, output_stride=8)
    config.final_head = "deeplabv3_c64"
    config.head_pool = _pool_names(16)
    config.batch_size = 8
    config.stage1_steps = 1200
    return config


PRESETS: dict[str, Callable[[], TrainConfig]] = {
    "tiny": tiny_preset,
    "default": default_preset,
    "ablation": ablation_preset,
}


# --- strict conversion of plain values to field types --------------------------------------

_checks = Checks(TrainError)
_Parser = Callable[[Any, str], Any]


def _nested(spec_type: type[DatasetSpec] | type[BackboneSpec]) -> _Parser:
    """The parser of a field holding a spec that has its own ``from_dict`` and checks."""

    def parse(value: Any, where: str) -> DatasetSpec | BackboneSpec:
        if isinstance(value, spec_type):
            return value
        data = _checks.mapping(value, where)
        try:
            return spec_type.from_dict(dict(data))
        except (MessError, TypeError, ValueError, KeyError) as err:
            raise TrainError(f"{where}: {err}") from err

    return parse


def _scalar(kind: type[Any]) -> _Parser:
    return lambda value, where: _checks.kind(kind, value, where)


def _parser(hint: Any) -> _Parser:
    """How a field of this type is read from plain data (its annotation says it all)."""
    if hint in (DatasetSpec, BackboneSpec):
        return _nested(hint)
    if get_origin(hint) is tuple:
        item = _scalar(get_args(hint)[0])
        return lambda value, where: _checks.pair(value, where, item)
    if get_origin(hint) is list:
        return _checks.strings
    return _scalar(hint)


_PARSERS: Final[dict[str, _Parser]] = {
    name: _parser(hint) for name, hint in get_type_hints(TrainConfig).items()
}
