"""The multi-exit segmentation network (MESSNet) and the specs that rebuild it.

Training calls :meth:`MESSNet.forward`, which returns every exit's logits.
The runtime instead walks the network itself: :meth:`MESSNet.forward_backbone`
from one point to the next, then :meth:`MESSNet.forward_head` for the exit
there, and stops as soon as its policy is satisfied; no block or head is ever
computed twice. Both paths execute the same modules in the same order, so
they give identical logits.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.model.backbones import BackboneSpec, PointInfo, build_backbone
from mess_ros.model.errors import ModelError, checks
from mess_ros.model.heads import ExitHead, HeadSpec, build_head

_POINT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ExitSpec:
    """An exit: a head architecture attached after a candidate point."""

    point: str
    head: HeadSpec

    def __post_init__(self) -> None:
        point = checks.string(self.point, "exit point", non_empty=True)
        if not _POINT_NAME.fullmatch(point) or point == FINAL_EXIT:
            raise ModelError(f"bad exit point {point!r}: expected a block name such as 'layer2_1'")
        if not isinstance(self.head, HeadSpec):
            raise ModelError(f"exit head must be a HeadSpec, got {self.head!r}")

    @property
    def id(self) -> str:
        return f"{self.point}:{self.head.name}"

    @classmethod
    def parse(cls, exit_id: str) -> ExitSpec:
        """Inverse of :attr:`id` ("layer2_1:fcn_c64_k2_d1")."""
        if exit_id == FINAL_EXIT:
            raise ModelError(
                f"{FINAL_EXIT!r} is the final exit; its head is ModelSpec.final_head, "
                "not an ExitSpec"
            )
        point, sep, head_name = str(exit_id).partition(":")
        if not sep:
            raise ModelError(
                f"bad exit id {exit_id!r}: expected '<point>:<head>', e.g. 'layer2_1:linear'"
            )
        return cls(point, HeadSpec.parse(head_name))

    def to_dict(self) -> dict[str, Any]:
        return {"point": self.point, "head": self.head.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExitSpec:
        data = checks.mapping(data, "exit spec")
        checks.keys(data, "exit spec", {"point", "head"})
        return cls(data["point"], HeadSpec.from_dict(data["head"]))


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the exact network (weights aside)."""

    backbone: BackboneSpec
    num_classes: int
    final_head: HeadSpec
    exits: tuple[ExitSpec, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, BackboneSpec):
            raise ModelError(f"model backbone must be a BackboneSpec, got {self.backbone!r}")
        if not isinstance(self.final_head, HeadSpec):
            raise ModelError(f"model final_head must be a HeadSpec, got {self.final_head!r}")
        checks.integer(self.num_classes, "model num_classes", minimum=2)
        # A list passed by a caller would make the frozen spec unhashable.
        object.__setattr__(self, "exits", tuple(self.exits))
        seen: set[str] = set()
        for exit_spec in self.exits:
            if not isinstance(exit_spec, ExitSpec):
                raise ModelError(f"model exits must be ExitSpecs, got {exit_spec!r}")
            if exit_spec.id in seen:
                raise ModelError(f"exit {exit_spec.id!r} appears twice in the model spec")
            seen.add(exit_spec.id)

    @property
    def exit_ids(self) -> list[str]:
        """Ids of the intermediate exits, in spec order (MESSNet sorts them by depth)."""
        return [e.id for e in self.exits]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone.to_dict(),
            "num_classes": self.num_classes,
            "final_head": self.final_head.to_dict(),
            "exits": [e.to_dict() for e in self.exits],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`; heads and exits may also be given by name."""
        data = checks.mapping(data, "model spec")
        checks.keys(data, "model spec", {"backbone", "num_classes", "final_head"}, {"exits"})
        exits = data.get("exits", [])
        if not isinstance(exits, list | tuple):
            raise ModelError(f"model spec exits must be a list, got {type(exits).__name__}")
        # Hand-written configs may name heads and exits by their canonical strings.
        final_head = data["final_head"]
        return cls(
            backbone=BackboneSpec.from_dict(data["backbone"]),
            num_classes=data["num_classes"],
            final_head=(
                HeadSpec.parse(final_head)
                if isinstance(final_head, str)
                else HeadSpec.from_dict(final_head)
            ),
            exits=tuple(
                ExitSpec.parse(e) if isinstance(e, str) else ExitSpec.from_dict(e) for e in exits
            ),
        )


class MESSNet(nn.Module):
    """Backbone + exit heads at candidate points + final head.

    Attributes ``points`` (candidate exit points, every block but the last,
    in depth order), ``final_point`` (the last block, under the final head)
    and ``exit_ids`` (intermediate exits by depth then head name, then
    ``"final"``) describe the network to the runtime and the search.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.backbone = build_backbone(spec.backbone)
        infos = self.backbone.points
        self._point_info: dict[str, PointInfo] = {info.name: info for info in infos}
        self._block_index: dict[str, int] = {info.name: i for i, info in enumerate(infos)}
        self.points: list[str] = [info.name for info in infos[:-1]]
        self.final_point: str = infos[-1].name
        self.final_head = build_head(
            spec.final_head, infos[-1].channels, spec.num_classes, infos[-1].stride
        )
        self.exit_heads = nn.ModuleDict()
        self._exits: dict[str, ExitSpec] = {}
        self._exits_at: dict[str, list[str]] = {}
        self.exit_ids: list[str] = [FINAL_EXIT]
        self.spec = replace(spec, exits=())
        self.add_exits(spec.exits)

    # ----------------------------------------------------------------- lookup
    @property
    def block_points(self) -> list[str]:
        """Every block in depth order: the candidate points, then the final point."""
        return [*self.points, self.final_point]

    def exit_spec(self, exit_id: str) -> ExitSpec:
        """The spec of an intermediate exit (the final exit has none: see ``spec.final_head``)."""
        try:
            return self._exits[exit_id]
        except KeyError as err:
            valid = ", ".join(self._exits) or "(none)"
            msg = f"unknown intermediate exit {exit_id!r}; valid exits: {valid}"
            raise ModelError(msg) from err

    def exit_point(self, exit_id: str) -> str:
        """The block whose output the exit reads; ``"final"`` gives ``final_point``."""
        if exit_id == FINAL_EXIT:
            return self.final_point
        self._check_exit(exit_id)
        return self._exits[exit_id].point

    def exit_stride(self, exit_id: str) -> int:
        """Downsampling of the exit's logits relative to the input (nominal, before rounding)."""
        return self._point_info[self.exit_point(exit_id)].stride

    def _check_block(self, point: str) -> str:
        if point not in self._block_index:
            valid = ", ".join(self.block_points)
            raise ModelError(f"unknown point {point!r}; valid points: {valid}")
        return point

    def _check_exit(self, exit_id: str) -> str:
        if exit_id != FINAL_EXIT and exit_id not in self._exits:
            valid = ", ".join(self.exit_ids)
            raise ModelError(f"unknown exit {exit_id!r}; valid exits: {valid}")
        return exit_id

    def _head(self, exit_id: str) -> nn.Module:
        if self._check_exit(exit_id) == FINAL_EXIT:
            return self.final_head
        head: nn.Module = self.exit_heads[exit_id]
        return head

    # -------------------------------------------------------------- execution
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Every exit's logits at exit resolution, keyed and ordered as ``exit_ids``."""
        logits: dict[str, Tensor] = {}
        features = self.backbone.enter(x)
        name: str
        block: nn.Module
        for name, block in self.backbone.blocks.items():
            features = block(features)
            for exit_id in self._exits_at.get(name, ()):
                logits[exit_id] = self.exit_heads[exit_id](features)
        logits[FINAL_EXIT] = self.final_head(features)
        return logits

    def forward_backbone(self, x: Tensor, start: str | None, end: str) -> Tensor:
        """Run the blocks after ``start`` up to and including ``end``.

        ``start=None`` means ``x`` is the image (the stem runs first);
        otherwise ``x`` is the feature map after block ``start``. ``start ==
        end`` returns ``x`` unchanged.
        """
        last = self._block_index[self._check_block(end)]
        if start is None:
            return self.backbone.run(x, -1, last)
        first = self._block_index[self._check_block(start)] + 1
        if first > last + 1:
            raise ModelError(f"point {end!r} comes before {start!r}; the backbone runs forward")
        return self.backbone.run(x, first, last)

    def forward_head(self, exit_id: str, features: Tensor) -> Tensor:
        """Logits of one exit from the features at its point, at that resolution."""
        logits: Tensor = self._head(exit_id)(features)
        return logits

    # --------------------------------------------------------------- editing
    def add_exits(self, exits: Sequence[ExitSpec]) -> None:
        """Attach new heads (the stage-2 head pool) and record them in ``spec``.

        Exits already present keep their trained weights, so a pool that
        repeats the stage-1 heads can be passed as is. New heads follow the
        network's device, dtype and train/eval mode. Nothing is added if any
        exit is invalid.
        """
        new: dict[str, ExitSpec] = {}
        for exit_spec in exits:
            if not isinstance(exit_spec, ExitSpec):
                raise ModelError(f"expected an ExitSpec, got {exit_spec!r}")
            if exit_spec.point not in self.points:
                where = (
                    "it carries the final head"
                    if exit_spec.point == self.final_point
                    else "it is not a block of this backbone"
                )
                valid = ", ".join(self.points)
                raise ModelError(
                    f"cannot attach exit {exit_spec.id!r} at {exit_spec.point!r} ({where}); "
                    f"candidate points: {valid}"
                )
            if exit_spec.id not in self._exits:
                new[exit_spec.id] = exit_spec
        reference = next(self.final_head.parameters(), None)
        for exit_id, exit_spec in new.items():
            info = self._point_info[exit_spec.point]
            head: ExitHead = build_head(
                exit_spec.head, info.channels, self.spec.num_classes, info.stride
            )
            if reference is not None:
                head.to(device=reference.device, dtype=reference.dtype)
            head.train(self.training)
            self.exit_heads[exit_id] = head
            self._exits[exit_id] = exit_spec
        self._reindex()

    def keep_exits(self, exit_ids: Sequence[str]) -> MESSNet:
        """A deep copy with only the given intermediate exits (the final one is always kept)."""
        if isinstance(exit_ids, str):
            raise ModelError("keep_exits takes a list of exit ids, not a single string")
        wanted = set(exit_ids) - {FINAL_EXIT}
        unknown = sorted(wanted - self._exits.keys())
        if unknown:
            valid = ", ".join(self.exit_ids)
            raise ModelError(f"cannot keep unknown exits {', '.join(unknown)}; valid: {valid}")
        pruned = copy.deepcopy(self)
        for exit_id in list(pruned._exits):
            if exit_id not in wanted:
                del pruned.exit_heads[exit_id]
                del pruned._exits[exit_id]
        pruned._reindex()
        return pruned

    def _reindex(self) -> None:
        """Sort exits by depth then head name and mirror them into ``spec``."""
        ordered = sorted(
            self._exits.values(), key=lambda e: (self._block_index[e.point], e.head.name)
        )
        self._exits = {e.id: e for e in ordered}
        self._exits_at = {}
        for exit_spec in ordered:
            self._exits_at.setdefault(exit_spec.point, []).append(exit_spec.id)
        self.exit_ids = [*self._exits, FINAL_EXIT]
        self.spec = replace(self.spec, exits=tuple(ordered))

    # ------------------------------------------------------------ parameters
    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def final_parameters(self) -> Iterator[nn.Parameter]:
        return self.final_head.parameters()

    def exit_parameters(self, exit_id: str) -> Iterator[nn.Parameter]:
        """Parameters of one exit's head (``"final"`` gives the final head's)."""
        return self._head(exit_id).parameters()
