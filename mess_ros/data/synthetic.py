"""Procedural robot-camera scenes whose difficulty decides how deep a network must look.

Why a generator and not a fixed data set: training, calibration, tests and the
demo need labelled frames on any machine, instantly, in any amount, and at any
resolution. Scenes are rendered on the fly from ``(seed, index, difficulty)``
with numpy and OpenCV in a few milliseconds, so a data loader needs no disk.

The world
---------
A forward-looking robot camera: a perspective ground plane below a horizon
(terrain, a road converging to the vanishing point with dashed markings), a
skyline of buildings and tree lines above it, optional building facades
receding along the sides, and objects standing on the ground (people,
vehicles and wheeled robots, boxes and cones, poles with signs), sized by
their distance to the horizon and painted far to near so nearer objects
occlude farther ones. Classes are those of :data:`SYNTHETIC_LABELS`.

Every region is drawn into a two-channel label canvas (class id, material id)
with the same polygons, so mask and image are aligned to the pixel. A material
is a pattern from a bank of tileable textures plus two colours; the image is
composed in one gather, then lit, blurred and corrupted with sensor noise.

How difficulty makes depth pay off
----------------------------------
The multi-exit network is only useful if easy frames can leave early and hard
ones need the deep layers. The levels are designed around what a shallow exit
can see: an early exit has a receptive field of a few tens of pixels, so it
can use colour and fine texture but not layout, position in the frame, object
shape or texture arrangement at a larger scale.

* easy (0): every class has its own colour family (road grey, terrain ochre,
  vegetation green, sky blue, vehicles blue, people red, obstacles orange),
  textures are class-typical and fine, few large objects, no noise or blur,
  near-uniform light. Colour alone nearly labels each pixel, so the first
  exit is almost as good as the last.
* medium (1): more and smaller objects, some clustering and occlusion,
  colour jitter, noise, mild blur, smooth illumination changes and shadows;
  each confusable group below is active with a small probability.
* hard (2): many objects in occluding clusters, clutter (bushes, rocks,
  mud patches), heavy noise, blur and motion blur, strong uneven light with
  cast shadows, and every *confusable group* active. In a confusable
  group, classes share the same colours so a pixel's neighbourhood at
  shallow scale is ambiguous; only context resolves it:

  - ``sky~road``: an overcast sky with the very colour and grain of the
    asphalt; what separates them is being above the skyline or on the
    ground plane between terrain (position and layout).
  - ``terrain~vegetation``: the same two earthy colours with the same fill
    ratio and edge sharpness; terrain is laid out in wavy furrow bands,
    vegetation in round clumps, both about 0.22 of the image height in
    period, larger than an early exit can compare.
  - ``building~obstacle``: boxes cut from the facade material (windows and
    all); a box is told apart by its bounded outline, shaded top and side
    faces and standing on the ground in front of the wall.
  - shared object palette: people, vehicles and boxes take random colours
    from one palette, leaving silhouettes (head and legs, wheels and cabin,
    cube faces) as the only cue.

A deep exit, which sees the horizon, the outline of an object and a whole
texture period, resolves these; a shallow one guesses, which is what makes
the final exit beat the first by a wide margin on the hard split while both
agree on the easy one. Hard objects are numerous but not tiny: a thing a few
pixels tall is lost at the backbone's stride by every exit alike, so it
would make the hard split harder without making depth pay off.

All sizes are fractions of the image height, so a scene rendered at 64x128 is
the same scene as at 256x512, only smaller.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from mess_ros.data.errors import DataError
from mess_ros.data.labels import SYNTHETIC_LABELS
from mess_ros.data.sample import Sample

DIFFICULTY_LEVELS: Final = ("easy", "medium", "hard")
EASY: Final = 0
MEDIUM: Final = 1
HARD: Final = 2

_NAMES = SYNTHETIC_LABELS.class_names
ROAD: Final = _NAMES.index("road")
TERRAIN: Final = _NAMES.index("terrain")
VEGETATION: Final = _NAMES.index("vegetation")
BUILDING: Final = _NAMES.index("building")
SKY: Final = _NAMES.index("sky")
PERSON: Final = _NAMES.index("person")
VEHICLE: Final = _NAMES.index("vehicle")
OBSTACLE: Final = _NAMES.index("obstacle")
POLE: Final = _NAMES.index("pole")

#: Groups of classes that, when active in a scene, share colours (see module docstring).
CONFUSABLE_GROUPS: Final = ("sky~road", "terrain~vegetation", "building~obstacle", "objects")

# Polygons are drawn with this many fractional bits so that small far objects keep their shape.
_SHIFT: Final = 3
_ONE: Final = 1 << _SHIFT

Color = tuple[float, float, float]
FloatArray = npt.NDArray[np.float32]


class Pattern(IntEnum):
    """Textures of the pattern bank; values run 0 (colour a) .. 1 (colour b)."""

    FLAT = 0
    GRAIN = 1
    CLOUD = 2
    FOLIAGE = 3
    GRASS = 4
    BLOBS = 5
    BANDS = 6
    WINDOWS = 7


@dataclass(frozen=True)
class DifficultyProfile:
    """Ranges the scene parameters of one difficulty level are drawn from."""

    object_count: tuple[int, int]
    object_scale: tuple[float, float]  # multiplier of the perspective size
    depth: tuple[float, float]  # object feet: 0 = horizon, 1 = bottom edge of the frame
    clutter_count: tuple[int, int]
    cluster_probability: float  # objects gathered in groups, which makes them occlude
    near_occluder_probability: float  # one object cut by the bottom edge, in front of the rest
    color_jitter: float  # per-channel colour spread around the class colour
    confusion_probability: float  # chance of each confusable group being active
    noise_sigma: tuple[float, float]
    blur_sigma: tuple[float, float]
    motion_blur_probability: float
    illumination: float  # amplitude of the smooth gain field
    brightness: float  # amplitude of the global gain
    color_cast: float  # amplitude of the per-channel white-balance error
    shadow_count: tuple[int, int]
    wall_probability: float  # per side


PROFILES: Final = (
    DifficultyProfile(
        object_count=(2, 4),
        object_scale=(0.9, 1.15),
        depth=(0.4, 1.0),
        clutter_count=(0, 1),
        cluster_probability=0.0,
        near_occluder_probability=0.0,
        color_jitter=8.0,
        confusion_probability=0.0,
        noise_sigma=(0.0, 1.5),
        blur_sigma=(0.0, 0.0),
        motion_blur_probability=0.0,
        illumination=0.04,
        brightness=0.05,
        color_cast=0.02,
        shadow_count=(0, 0),
        wall_probability=0.3,
    ),
    DifficultyProfile(
        object_count=(4, 8),
        object_scale=(0.7, 1.05),
        depth=(0.2, 1.0),
        clutter_count=(2, 5),
        cluster_probability=0.3,
        near_occluder_probability=0.15,
        color_jitter=22.0,
        confusion_probability=0.25,
        noise_sigma=(2.0, 7.0),
        blur_sigma=(0.0, 0.8),
        motion_blur_probability=0.1,
        illumination=0.15,
        brightness=0.15,
        color_cast=0.05,
        shadow_count=(0, 2),
        wall_probability=0.4,
    ),
    DifficultyProfile(
        object_count=(10, 20),
        object_scale=(0.6, 1.0),
        depth=(0.25, 0.95),
        clutter_count=(6, 14),
        cluster_probability=0.8,
        near_occluder_probability=0.4,
        color_jitter=35.0,
        confusion_probability=1.0,
        noise_sigma=(6.0, 14.0),
        blur_sigma=(0.5, 1.5),
        motion_blur_probability=0.3,
        illumination=0.3,
        brightness=0.3,
        color_cast=0.1,
        shadow_count=(1, 3),
        wall_probability=0.5,
    ),
)

# Kinds of standing objects: (kind, class id, height at the bottom edge in image heights, weight).
_OBJECT_KINDS: Final = (
    ("person", PERSON, 0.62, 0.32),
    ("vehicle", VEHICLE, 0.40, 0.17),
    ("robot", VEHICLE, 0.34, 0.08),
    ("box", OBSTACLE, 0.30, 0.18),
    ("cone", OBSTACLE, 0.22, 0.08),
    ("pole", POLE, 1.10, 0.17),
)
_CLUTTER_KINDS: Final = (
    ("bush", VEGETATION, 0.22, 0.45),
    ("rock", OBSTACLE, 0.10, 0.3),
    ("patch", TERRAIN, 0.25, 0.25),
)

# Class colour families of the easy level: (colour a, colour b) per background class.
_BASE_COLORS: Final[dict[int, tuple[Color, Color]]] = {
    ROAD: ((92.0, 92.0, 98.0), (118.0, 118.0, 124.0)),
    TERRAIN: ((168.0, 132.0, 78.0), (140.0, 150.0, 70.0)),
    VEGETATION: ((32.0, 96.0, 34.0), (66.0, 142.0, 46.0)),
    BUILDING: ((178.0, 104.0, 84.0), (104.0, 64.0, 60.0)),
    SKY: ((126.0, 176.0, 236.0), (196.0, 218.0, 246.0)),
}
_MARKING_COLOR: Final = (236.0, 236.0, 232.0)
_PERSON_SHIRT: Final = (204.0, 40.0, 64.0)
_PERSON_TROUSERS: Final = (96.0, 28.0, 96.0)
_SKIN: Final = (226.0, 182.0, 150.0)
_VEHICLE_BODY: Final = (36.0, 62.0, 182.0)
_GLASS: Final = (24.0, 32.0, 64.0)
_TYRE: Final = (24.0, 24.0, 26.0)
_OBSTACLE: Final = (236.0, 148.0, 40.0)
_POLE_METAL: Final = (170.0, 170.0, 176.0)
_SIGN: Final = (244.0, 236.0, 60.0)
_ROCK: Final = (200.0, 118.0, 34.0)


@dataclass(frozen=True)
class PlacedObject:
    """One object on the ground plane, as laid out before drawing."""

    kind: str
    class_id: int
    x_px: float  # horizontal centre
    foot_y_px: float  # ground contact; may lie below the frame for near occluders
    height_px: float
    shared_palette: bool  # coloured from the palette shared by all object classes


@dataclass(frozen=True)
class ScenePlan:
    """The layout and degradations of one scene: what its difficulty level decided.

    Exposed so that tests and reports can check that difficulty changes the
    statistics (object count and size, confusable groups, noise) without
    re-deriving them from pixels.
    """

    index: int
    difficulty: int
    horizon_y_px: float
    vanish_x_px: float
    objects: tuple[PlacedObject, ...]  # standing objects and clutter, far to near
    shared_groups: frozenset[str]  # active confusable groups
    noise_sigma: float
    blur_sigma: float
    motion_blur_px: float
    detail_seed: int  # every remaining random choice of the drawing (colours, shapes)


@functools.lru_cache(maxsize=4)
def _pattern_bank(height: int) -> tuple[npt.NDArray[np.uint8], int]:
    """Tileable textures of every :class:`Pattern`, sized relative to the image height.

    Built once per height from a fixed seed: materials differ between scenes
    by colours and random offsets into the tiles, not by regenerating noise,
    which is what keeps rendering cheap.
    """
    tile = max(64, 1 << math.ceil(math.log2(2 * height)))
    rng = np.random.default_rng(0x5EED)
    bank = np.zeros((len(Pattern), tile, tile), dtype=np.float64)
    ys = np.arange(tile, dtype=np.float64)[:, None]
    xs = np.arange(tile, dtype=np.float64)[None, :]

    grain = cv2.GaussianBlur(rng.standard_normal((tile, tile)), (0, 0), 0.6)
    bank[Pattern.GRAIN] = 0.5 + 0.22 * grain / grain.std()
    bank[Pattern.CLOUD] = 0.5 + 0.3 * _periodic_noise(rng, tile, sigma_yx=(0.06 * height,) * 2)
    bank[Pattern.FOLIAGE] = _sigmoid(2.5 * _ring_noise(rng, tile, period=0.035 * height))
    streaks = _periodic_noise(rng, tile, sigma_yx=(0.018 * height, 0.0025 * height))
    bank[Pattern.GRASS] = _sigmoid(1.8 * streaks)

    # Blobs and bands share period, fill ratio and edge sharpness: only their
    # arrangement differs, which an early exit cannot see (module docstring).
    period = 0.22 * height
    bank[Pattern.BLOBS] = _sigmoid(5.0 * _ring_noise(rng, tile, period=period))
    band_period = tile / max(1, round(tile / period))
    warp = 0.9 * _periodic_noise(rng, tile, sigma_yx=(0.12 * height, 0.12 * height))
    bank[Pattern.BANDS] = _sigmoid(5.0 * 1.4 * np.sin(2.0 * np.pi * ys / band_period + warp))

    cell_y = max(3, round(0.10 * height))
    cell_x = max(3, round(0.08 * height))
    in_window_y = (ys % cell_y) >= 0.4 * cell_y
    in_window_x = (xs % cell_x) >= 0.45 * cell_x
    bank[Pattern.WINDOWS] = np.where(in_window_y & in_window_x, 0.92, 0.05) + 0.04 * grain
    return np.clip(bank * 255.0 + 0.5, 0, 255).astype(np.uint8), tile


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    result: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-x))
    return result


def _periodic_noise(
    rng: np.random.Generator, tile: int, sigma_yx: tuple[float, float]
) -> npt.NDArray[np.float64]:
    """Gaussian-smoothed white noise, periodic (filtered in Fourier space), unit variance."""
    spectrum = np.fft.rfft2(rng.standard_normal((tile, tile)))
    fy = np.fft.fftfreq(tile)[:, None]
    fx = np.fft.rfftfreq(tile)[None, :]
    gain = np.exp(-2.0 * np.pi**2 * ((sigma_yx[0] * fy) ** 2 + (sigma_yx[1] * fx) ** 2))
    return _standardise(np.fft.irfft2(spectrum * gain, s=(tile, tile)))


def _ring_noise(rng: np.random.Generator, tile: int, period: float) -> npt.NDArray[np.float64]:
    """Band-pass noise around one spatial period: blobs of a regular size when thresholded."""
    spectrum = np.fft.rfft2(rng.standard_normal((tile, tile)))
    radius = np.hypot(np.fft.fftfreq(tile)[:, None], np.fft.rfftfreq(tile)[None, :])
    centre = 1.0 / period
    gain = np.exp(-0.5 * ((radius - centre) / (0.3 * centre)) ** 2)
    return _standardise(np.fft.irfft2(spectrum * gain, s=(tile, tile)))


def _standardise(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    centred = x - x.mean()
    result: npt.NDArray[np.float64] = centred / (centred.std() + 1e-12)
    return result


@functools.lru_cache(maxsize=4)
def _noise_bank(height: int, width: int) -> npt.NDArray[np.float32]:
    """Unit-variance sensor noise, larger than a frame so random crops differ between scenes."""
    rng = np.random.default_rng(0xA015E)
    shape = (height + height // 2 + 1, width + width // 2 + 1, 3)
    return rng.standard_normal(shape, dtype=np.float32)


class _Materials:
    """Per-scene material table: pattern, two colours and a texture offset per id.

    Material ids live in a uint8 canvas channel; a scene uses well under 255
    (a few background materials plus at most four per object).
    """

    def __init__(self, rng: np.random.Generator, tile: int) -> None:
        self._rng = rng
        self._tile = tile
        self.pattern: list[int] = []
        self.color_a: list[Color] = []
        self.color_b: list[Color] = []
        self.offset_y: list[int] = []
        self.offset_x: list[int] = []

    def add(self, pattern: Pattern, color_a: Color, color_b: Color | None = None) -> int:
        if len(self.pattern) >= 255:
            raise DataError("a synthetic scene exceeded 255 materials; reduce the object count")
        self.pattern.append(int(pattern))
        self.color_a.append(color_a)
        self.color_b.append(color_a if color_b is None else color_b)
        self.offset_y.append(int(self._rng.integers(0, self._tile)))
        self.offset_x.append(int(self._rng.integers(0, self._tile)))
        return len(self.pattern) - 1

    def shaded(self, material: int, gain: float) -> int:
        """Same material under different light: the faces of a box."""
        return self.add(
            Pattern(self.pattern[material]),
            _scale(self.color_a[material], gain),
            _scale(self.color_b[material], gain),
        )


def _scale(color: Color, gain: float) -> Color:
    return (
        min(255.0, color[0] * gain),
        min(255.0, color[1] * gain),
        min(255.0, color[2] * gain),
    )


def _jitter(rng: np.random.Generator, color: Color, amount: float) -> Color:
    if amount <= 0.0:
        return color
    r, g, b = np.clip(np.asarray(color) + rng.uniform(-amount, amount, 3), 0.0, 255.0)
    return (float(r), float(g), float(b))


def _random_color(rng: np.random.Generator) -> Color:
    r, g, b = rng.uniform(35.0, 225.0, 3)
    return (float(r), float(g), float(b))


class SceneGenerator:
    """Deterministic renderer of synthetic robot-camera scenes.

    ``render(index, difficulty)`` always returns the same sample for the same
    ``(seed, index, difficulty)``, on any machine and in any order, so splits
    are defined by seed alone (train 0, val 1, test 2 by convention) and data
    loader workers need no coordination.
    """

    labels = SYNTHETIC_LABELS

    def __init__(self, height: int = 256, width: int = 512, seed: int = 0) -> None:
        if height < 16 or width < 16:
            raise DataError(f"synthetic scenes need at least 16x16 pixels, got {height}x{width}")
        if seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed}")
        self.height = height
        self.width = width
        self.seed = seed
        self._bank, self._tile = _pattern_bank(height)
        self._bank_flat = self._bank.reshape(-1)
        self._noise = _noise_bank(height, width)
        self._rows = np.arange(height, dtype=np.int32)[:, None]
        self._cols = np.arange(width, dtype=np.int32)[None, :]

    # ------------------------------------------------------------------ layout
    def plan(self, index: int, difficulty: int | None = None) -> ScenePlan:
        """Draw the layout of scene ``index``; ``difficulty=None`` draws the level too."""
        if index < 0:
            raise DataError(f"scene index must be non-negative, got {index}")
        drawn_level = int(np.random.default_rng([self.seed, index]).integers(0, len(PROFILES)))
        level = drawn_level if difficulty is None else _check_level(difficulty)
        # The layout stream depends on the level, so an explicit level equal to
        # the drawn one reproduces the default scene exactly.
        rng = np.random.default_rng([self.seed, index, level, 1])
        profile = PROFILES[level]
        h, w = float(self.height), float(self.width)
        horizon = h * rng.uniform(0.30, 0.50)
        vanish_x = w * rng.uniform(0.30, 0.70)
        shared = frozenset(
            g for g in CONFUSABLE_GROUPS if rng.random() < profile.confusion_probability
        )

        objects = self._place(rng, profile, horizon, shared, standing=True)
        objects += self._place(rng, profile, horizon, shared, standing=False)
        objects.sort(key=lambda o: o.foot_y_px)

        motion = 0.0
        if rng.random() < profile.motion_blur_probability:
            motion = rng.uniform(0.006, 0.02) * w
        return ScenePlan(
            index=index,
            difficulty=level,
            horizon_y_px=horizon,
            vanish_x_px=vanish_x,
            objects=tuple(objects),
            shared_groups=shared,
            noise_sigma=float(rng.uniform(*profile.noise_sigma)),
            blur_sigma=float(rng.uniform(*profile.blur_sigma)),
            motion_blur_px=float(motion),
            detail_seed=int(rng.integers(0, 2**62)),
        )

    def _place(
        self,
        rng: np.random.Generator,
        profile: DifficultyProfile,
        horizon: float,
        shared: frozenset[str],
        standing: bool,
    ) -> list[PlacedObject]:
        kinds = _OBJECT_KINDS if standing else _CLUTTER_KINDS
        weights = np.asarray([k[3] for k in kinds])
        low, high = profile.object_count if standing else profile.clutter_count
        count = int(rng.integers(low, high + 1))
        w, ground = float(self.width), self.height - horizon
        centres: list[float] = []
        if standing and rng.random() < profile.cluster_probability:
            centres = list(rng.uniform(0.1, 0.9, int(rng.integers(1, 4))) * w)
        near_occluder = standing and rng.random() < profile.near_occluder_probability
        placed: list[PlacedObject] = []
        for i in range(count):
            kind, class_id, base_height, _ = kinds[
                int(rng.choice(len(kinds), p=weights / weights.sum()))
            ]
            depth = rng.uniform(*profile.depth)
            if near_occluder and i == 0:
                depth = rng.uniform(1.05, 1.35)
            if centres:
                x = float(rng.normal(centres[int(rng.integers(len(centres)))], 0.07 * w))
            else:
                x = float(rng.uniform(-0.05, 1.05) * w)
            height = depth * base_height * self.height * rng.uniform(*profile.object_scale)
            palette = "objects" in shared and class_id != POLE and rng.random() < 0.85
            placed.append(
                PlacedObject(
                    kind=kind,
                    class_id=class_id,
                    x_px=x,
                    foot_y_px=float(horizon + depth * ground),
                    height_px=float(height),
                    shared_palette=bool(palette),
                )
            )
        return placed

    # --------------------------------------------------------------- rendering
    def render(self, index: int, difficulty: int | None = None) -> Sample:
        """The image and mask of scene ``index`` (difficulty drawn from seed and index if None)."""
        plan = self.plan(index, difficulty)
        image, mask = self.draw(plan)
        return Sample(
            image=image,
            mask=mask,
            difficulty=plan.difficulty,
            name=f"synthetic_s{self.seed}_{index:06d}",
        )

    def draw(self, plan: ScenePlan) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """Render a plan to (RGB image, class-id mask)."""
        rng = np.random.default_rng(plan.detail_seed)
        profile = PROFILES[plan.difficulty]
        mats = _Materials(rng, self._tile)
        canvas = np.zeros((self.height, self.width, 2), dtype=np.uint8)
        painter = _Painter(canvas, mats, rng, profile, plan, self.height, self.width)
        painter.background()
        for obj in plan.objects:
            painter.object(obj)
        composed = self._compose(canvas[..., 1], mats)
        image = self._degrade(composed, plan, profile, rng)
        return image, np.ascontiguousarray(canvas[..., 0])

    def _compose(self, material: npt.NDArray[np.uint8], mats: _Materials) -> FloatArray:
        """Texture every pixel from its material in one gather over the pattern bank."""
        tile = self._tile
        pattern = np.asarray(mats.pattern, dtype=np.int32)
        offset_y = np.asarray(mats.offset_y, dtype=np.int32)
        offset_x = np.asarray(mats.offset_x, dtype=np.int32)
        ys = (self._rows + offset_y[material]) & (tile - 1)
        xs = (self._cols + offset_x[material]) & (tile - 1)
        flat = pattern[material] * (tile * tile) + ys * tile + xs
        texture = self._bank_flat[flat].astype(np.float32) * np.float32(1.0 / 255.0)
        lut_a = np.zeros((1, 256, 3), dtype=np.float32)
        lut_d = np.zeros((1, 256, 3), dtype=np.float32)
        color_a = np.asarray(mats.color_a, dtype=np.float32)
        lut_a[0, : len(color_a)] = color_a
        lut_d[0, : len(color_a)] = np.asarray(mats.color_b, dtype=np.float32) - color_a
        material3 = cv2.merge([material, material, material])
        base = cv2.LUT(material3, lut_a)
        delta = cv2.LUT(material3, lut_d)
        composed: FloatArray = base + delta * texture[..., None]
        return composed

    def _degrade(
        self,
        image: FloatArray,
        plan: ScenePlan,
        profile: DifficultyProfile,
        rng: np.random.Generator,
    ) -> npt.NDArray[np.uint8]:
        """Lighting, optics and sensor: what makes the same scene look different on a robot."""
        h, w = self.height, self.width
        coarse = rng.uniform(1 - profile.illumination, 1 + profile.illumination, (3, 5))
        coarse *= rng.uniform(1 - profile.brightness, 1 + profile.brightness)
        small_hw = (max(4, h // 4), max(4, w // 4))
        gain_small = np.asarray(
            cv2.resize(
                coarse.astype(np.float32), (small_hw[1], small_hw[0]), interpolation=cv2.INTER_CUBIC
            ),
            dtype=np.float32,
        )
        low, high = profile.shadow_count
        for _ in range(int(rng.integers(low, high + 1))):
            shadow = np.zeros(small_hw, dtype=np.uint8)
            top = plan.horizon_y_px / h * small_hw[0]
            corners = np.stack(
                [rng.uniform(-0.2, 1.2, 4) * small_hw[1], rng.uniform(0, 1, 4) * small_hw[0]], 1
            )
            corners[:, 1] = np.maximum(corners[:, 1], top)
            cv2.fillPoly(shadow, [np.round(corners).astype(np.int32)], 1)
            gain_small[shadow > 0] *= rng.uniform(0.45, 0.7)
        gain = cv2.resize(gain_small, (w, h), interpolation=cv2.INTER_LINEAR)
        cast = rng.uniform(1 - profile.color_cast, 1 + profile.color_cast, 3).astype(np.float32)
        image *= gain[..., None]
        image *= cast
        if plan.blur_sigma >= 0.3:
            image = np.asarray(cv2.GaussianBlur(image, (0, 0), plan.blur_sigma), dtype=np.float32)
        if plan.motion_blur_px >= 2.0:
            length = round(plan.motion_blur_px)
            kernel = np.full((1, length), 1.0 / length, dtype=np.float32)
            blurred = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)
            image = np.asarray(blurred, dtype=np.float32)
        if plan.noise_sigma > 0.0:
            oy = int(rng.integers(0, self._noise.shape[0] - h + 1))
            ox = int(rng.integers(0, self._noise.shape[1] - w + 1))
            image += self._noise[oy : oy + h, ox : ox + w] * np.float32(plan.noise_sigma)
        np.clip(image, 0.0, 255.0, out=image)
        result: npt.NDArray[np.uint8] = (image + 0.5).astype(np.uint8)
        return result


def _check_level(difficulty: int) -> int:
    if difficulty not in range(len(DIFFICULTY_LEVELS)):
        levels = ", ".join(f"{i} {n}" for i, n in enumerate(DIFFICULTY_LEVELS))
        raise DataError(f"unknown difficulty {difficulty!r}; expected one of {levels} or None")
    return int(difficulty)


def difficulty_from_name(name: str) -> int:
    """``"easy"`` -> 0 etc., for configuration files and command lines."""
    try:
        return DIFFICULTY_LEVELS.index(name)
    except ValueError as err:
        raise DataError(
            f"unknown difficulty {name!r}; expected one of {DIFFICULTY_LEVELS}"
        ) from err


class _Painter:
    """Draws one scene into the (class id, material id) canvas, back to front."""

    def __init__(
        self,
        canvas: npt.NDArray[np.uint8],
        mats: _Materials,
        rng: np.random.Generator,
        profile: DifficultyProfile,
        plan: ScenePlan,
        height: int,
        width: int,
    ) -> None:
        self.canvas = canvas
        self.mats = mats
        self.rng = rng
        self.profile = profile
        self.plan = plan
        self.h = height
        self.w = width
        self.background_materials = self._background_materials()
        self._drawers: dict[str, Callable[[PlacedObject], None]] = {
            "person": self._draw_person,
            "vehicle": self._draw_vehicle,
            "robot": self._draw_robot,
            "box": self._draw_box,
            "cone": self._draw_cone,
            "pole": self._draw_pole,
            "bush": self._draw_bush,
            "rock": self._draw_rock,
            "patch": self._draw_patch,
        }

    # ------------------------------------------------------------ primitives
    def poly(self, points: Sequence[tuple[float, float]], class_id: int, material: int) -> None:
        pts = np.round(np.asarray(points, dtype=np.float64) * _ONE).astype(np.int32)
        cv2.fillPoly(self.canvas, [pts], (class_id, material), lineType=cv2.LINE_8, shift=_SHIFT)

    def ellipse(
        self, cx: float, cy: float, ax: float, ay: float, class_id: int, material: int
    ) -> None:
        centre = (round(cx * _ONE), round(cy * _ONE))
        axes = (max(1, round(ax * _ONE)), max(1, round(ay * _ONE)))
        cv2.ellipse(
            self.canvas, centre, axes, 0, 0, 360, (class_id, material), -1, cv2.LINE_8, _SHIFT
        )

    def rect(
        self, x0: float, y0: float, x1: float, y1: float, class_id: int, material: int
    ) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], class_id, material)

    # ------------------------------------------------------------- materials
    def _class_colors(self, class_id: int) -> tuple[Color, Color]:
        a, b = _BASE_COLORS[class_id]
        jitter = self.profile.color_jitter
        shift = self.rng.uniform(-jitter, jitter, 3)
        # One shift for both colours keeps the texture contrast of the class.
        return _jitter_by(a, shift), _jitter_by(b, shift)

    def _background_materials(self) -> dict[int, int]:
        mats, shared, rng = self.mats, self.plan.shared_groups, self.rng
        out: dict[int, int] = {}
        road_a, road_b = self._class_colors(ROAD)
        out[ROAD] = mats.add(Pattern.GRAIN, road_a, road_b)
        if "sky~road" in shared:
            out[SKY] = mats.add(Pattern.GRAIN, road_a, road_b)
        else:
            out[SKY] = mats.add(Pattern.CLOUD, *self._class_colors(SKY))
        if "terrain~vegetation" in shared:
            light = (rng.uniform(70, 150), rng.uniform(90, 160), rng.uniform(30, 90))
            dark = _scale(light, rng.uniform(0.5, 0.7))
            out[TERRAIN] = mats.add(Pattern.BANDS, dark, light)
            out[VEGETATION] = mats.add(Pattern.BLOBS, dark, light)
        else:
            out[TERRAIN] = mats.add(Pattern.GRASS, *self._class_colors(TERRAIN))
            out[VEGETATION] = mats.add(Pattern.FOLIAGE, *self._class_colors(VEGETATION))
        out[BUILDING] = mats.add(Pattern.WINDOWS, *self._class_colors(BUILDING))
        return out

    def _object_color(self, base: Color, obj: PlacedObject) -> Color:
        if obj.shared_palette:
            return _random_color(self.rng)
        return _jitter(self.rng, base, self.profile.color_jitter)

    # ------------------------------------------------------------ background
    def background(self) -> None:
        h, w, rng = float(self.h), float(self.w), self.rng
        horizon, vx = self.plan.horizon_y_px, self.plan.vanish_x_px
        bg = self.background_materials
        self.canvas[..., 0] = SKY
        self.canvas[..., 1] = bg[SKY]
        x = -rng.uniform(0.0, 0.1) * w
        while x < w:
            seg = rng.uniform(0.08, 0.3) * w
            kind = rng.random()
            if kind < 0.45:
                top = horizon - rng.uniform(0.2, 0.8) * horizon
                material = self.mats.add(Pattern.WINDOWS, *self._building_colors())
                self.rect(x, top, x + seg, horizon + 1.0, BUILDING, material)
            elif kind < 0.85:
                crown = rng.uniform(0.15, 0.55) * horizon
                self.rect(
                    x, horizon - 0.4 * crown, x + seg, horizon + 1.0, VEGETATION, bg[VEGETATION]
                )
                for _ in range(int(rng.integers(2, 5))):
                    radius = rng.uniform(0.3, 0.6) * crown
                    cx = x + rng.uniform(0.0, seg)
                    cy = horizon - crown + radius * rng.uniform(0.6, 1.2)
                    self.ellipse(
                        cx, cy, radius * rng.uniform(0.8, 1.3), radius, VEGETATION, bg[VEGETATION]
                    )
            x += seg
        self.rect(-1.0, horizon, w + 1.0, h + 1.0, TERRAIN, bg[TERRAIN])
        if rng.random() < 0.9:
            self._road(horizon, vx)
        for side in (-1, 1):
            if rng.random() < self.profile.wall_probability:
                self._facade(side, horizon, vx)

    def _building_colors(self) -> tuple[Color, Color]:
        if "building~obstacle" in self.plan.shared_groups:
            m = self.background_materials[BUILDING]
            return self.mats.color_a[m], self.mats.color_b[m]
        return self._class_colors(BUILDING)

    def _road(self, horizon: float, vx: float) -> None:
        h, w, rng = float(self.h), float(self.w), self.rng
        bottom_centre = vx + rng.uniform(-0.25, 0.25) * w
        half_bottom = rng.uniform(0.25, 0.65) * w
        half_top = 0.01 * w
        road = self.background_materials[ROAD]
        self.poly(
            [
                (bottom_centre - half_bottom, h),
                (bottom_centre + half_bottom, h),
                (vx + half_top, horizon),
                (vx - half_top, horizon),
            ],
            ROAD,
            road,
        )
        if rng.random() < (0.8 if self.plan.difficulty == EASY else 0.5):
            marking = self.mats.add(Pattern.FLAT, _jitter(rng, _MARKING_COLOR, 8.0))
            depth = rng.uniform(0.85, 1.1)
            while depth > 0.03:
                near, far = depth, depth * 0.82
                pts: list[tuple[float, float]] = []
                for d, sgn in ((near, -1), (near, 1), (far, 1), (far, -1)):
                    cx = vx + (bottom_centre - vx) * d
                    pts.append((cx + sgn * 0.008 * w * d, horizon + d * (h - horizon)))
                self.poly(pts, ROAD, marking)
                depth *= 0.62

    def _facade(self, side: int, horizon: float, vx: float) -> None:
        h, w, rng = float(self.h), float(self.w), self.rng
        edge_x = 0.0 if side < 0 else w
        span = vx if side < 0 else w - vx
        end_frac = rng.uniform(0.3, 0.75)
        end_x = edge_x - side * end_frac * span
        top0 = horizon - rng.uniform(0.6, 1.8) * horizon
        bottom0 = horizon + rng.uniform(0.3, 0.8) * (h - horizon)
        top1 = top0 + (horizon - top0) * end_frac
        bottom1 = bottom0 + (horizon - bottom0) * end_frac
        edge_x -= side * 1.0
        material = self.mats.add(Pattern.WINDOWS, *self._building_colors())
        self.poly(
            [(edge_x, top0), (end_x, top1), (end_x, bottom1), (edge_x, bottom0)], BUILDING, material
        )

    # --------------------------------------------------------------- objects
    def object(self, obj: PlacedObject) -> None:
        if obj.height_px < 1.0:
            return
        self._drawers[obj.kind](obj)

    def _draw_person(self, obj: PlacedObject) -> None:
        x, foot, hgt, rng = obj.x_px, obj.foot_y_px, obj.height_px, self.rng
        shirt = self.mats.add(Pattern.FLAT, self._object_color(_PERSON_SHIRT, obj))
        trousers = self.mats.add(Pattern.FLAT, self._object_color(_PERSON_TROUSERS, obj))
        skin = self.mats.add(Pattern.FLAT, _jitter(rng, _SKIN, 25.0))
        head_r = 0.085 * hgt
        hip = foot - 0.47 * hgt
        shoulder = foot - hgt + 2.1 * head_r
        half = 0.14 * hgt * rng.uniform(0.85, 1.15)
        stride = rng.uniform(-0.08, 0.08) * hgt
        leg = 0.055 * hgt
        for sign in (-1, 1):
            top_x = x + sign * 0.6 * half
            foot_x = top_x + sign * abs(stride)
            self.poly(
                [
                    (top_x - leg, hip),
                    (top_x + leg, hip),
                    (foot_x + leg, foot),
                    (foot_x - leg, foot),
                ],
                PERSON,
                trousers,
            )
        arm = 0.04 * hgt
        swing = rng.uniform(-0.1, 0.1) * hgt
        for sign in (-1, 1):
            sx = x + sign * half
            hand_x = sx + sign * 0.05 * hgt + swing * sign
            self.poly(
                [
                    (sx - arm, shoulder),
                    (sx + arm, shoulder),
                    (hand_x + arm, hip + 0.05 * hgt),
                    (hand_x - arm, hip + 0.05 * hgt),
                ],
                PERSON,
                shirt,
            )
        self.ellipse(
            x, (shoulder + hip) / 2, half, (hip - shoulder) / 2 + 0.03 * hgt, PERSON, shirt
        )
        self.ellipse(x, foot - hgt + head_r, head_r * 0.9, head_r, PERSON, skin)

    def _draw_vehicle(self, obj: PlacedObject) -> None:
        x, foot, hgt, rng = obj.x_px, obj.foot_y_px, obj.height_px, self.rng
        body = self.mats.add(Pattern.FLAT, self._object_color(_VEHICLE_BODY, obj))
        glass = self.mats.add(Pattern.FLAT, _jitter(rng, _GLASS, 12.0))
        tyre = self.mats.add(Pattern.FLAT, _jitter(rng, _TYRE, 6.0))
        length = rng.uniform(1.7, 2.5) * hgt
        wheel_r = 0.19 * hgt
        body_bottom = foot - 0.12 * hgt
        body_top = foot - 0.6 * hgt
        left, right = x - length / 2, x + length / 2
        self.rect(left, body_top, right, body_bottom, VEHICLE, body)
        cabin_l = left + rng.uniform(0.15, 0.3) * length
        cabin_r = right - rng.uniform(0.15, 0.3) * length
        inset = 0.12 * length
        self.poly(
            [
                (cabin_l, body_top),
                (cabin_r, body_top),
                (cabin_r - inset, foot - hgt),
                (cabin_l + inset, foot - hgt),
            ],
            VEHICLE,
            body,
        )
        pad = 0.06 * hgt
        self.poly(
            [
                (cabin_l + pad, body_top),
                (cabin_r - pad, body_top),
                (cabin_r - inset, foot - hgt + pad),
                (cabin_l + inset + pad, foot - hgt + pad),
            ],
            VEHICLE,
            glass,
        )
        for wx in (left + 0.22 * length, right - 0.22 * length):
            self.ellipse(wx, foot - wheel_r, wheel_r, wheel_r, VEHICLE, tyre)

    def _draw_robot(self, obj: PlacedObject) -> None:
        x, foot, hgt, rng = obj.x_px, obj.foot_y_px, obj.height_px, self.rng
        body = self.mats.add(Pattern.FLAT, self._object_color(_VEHICLE_BODY, obj))
        dark = self.mats.add(Pattern.FLAT, _jitter(rng, _TYRE, 6.0))
        width = rng.uniform(1.0, 1.4) * hgt
        wheel_r = 0.16 * hgt
        self.rect(x - width / 2, foot - 0.62 * hgt, x + width / 2, foot - 0.1 * hgt, VEHICLE, body)
        mast = 0.05 * hgt
        self.rect(x - mast, foot - 0.9 * hgt, x + mast, foot - 0.6 * hgt, VEHICLE, dark)
        self.ellipse(x, foot - 0.9 * hgt, 0.1 * hgt, 0.1 * hgt, VEHICLE, dark)
        for wx in (x - 0.32 * width, x + 0.32 * width):
            self.ellipse(wx, foot - wheel_r, wheel_r, wheel_r, VEHICLE, dark)

    def _draw_box(self, obj: PlacedObject) -> None:
        x, foot, hgt, rng = obj.x_px, obj.foot_y_px, obj.height_px, self.rng
        if "building~obstacle" in self.plan.shared_groups:
            # Cut from the facade material: only outline and shading tell the box from the wall.
            m = self.background_materials[BUILDING]
            front = self.mats.add(Pattern.WINDOWS, self.mats.color_a[m], self.mats.color_b[m])
        else:
            color = self._object_color(_OBSTACLE, obj)
            front = self.mats.add(Pattern.GRAIN, color, _scale(color, 0.9))
        top = self.mats.shaded(front, 1.3)
        side = self.mats.shaded(front, 0.65)
        width = rng.uniform(0.8, 1.5) * hgt
        face_h = 0.78 * hgt
        depth_x = (0.22 * width) * (1.0 if self.plan.vanish_x_px > x else -1.0)
        depth_y = hgt - face_h
        x0, x1 = x - width / 2, x + width / 2
        y0 = foot - face_h
        back = x1 if depth_x > 0 else x0
        self.poly(
            [
                (back, y0),
                (back + depth_x, y0 - depth_y),
                (back + depth_x, foot - depth_y),
                (back, foot),
            ],
            OBSTACLE,
            side,
        )
        self.poly(
            [(x0, y0), (x1, y0), (x1 + depth_x, y0 - depth_y), (x0 + depth_x, y0 - depth_y)],
            OBSTACLE,
            top,
        )
        self.rect(x0, y0, x1, foot, OBSTACLE, front)

    def _draw_cone(self, obj: PlacedObject) -> None:
        x, foot, hgt, rng = obj.x_px, obj.foot_y_px, obj.height_px, self.rng
        color = self._object_color(_OBSTACLE, obj)
        cone = self.mats.add(Pattern.FLAT, color)
        band = self.mats.add(Pattern.FLAT, _jitter(rng, (235.0, 235.0, 235.0), 10.0))
        half = 0.32 * hgt
        self.rect(x - half * 1.3, foot - 0.08 * hgt, x + half * 1.3, foot, OBSTACLE, cone)
        self.poly(
            [
                (x - half, foot),
                (x + half, foot),
                (x + 0.06 * hgt, foot - hgt),
                (x - 0.06 * hgt, foot - hgt),
            ],
            OBSTACLE,
            cone,
        )
        y0, y1 = foot - 0.62 * hgt, foot - 0.45 * hgt
        w0, w1 = 0.06 + 0.26 * 0.38, 0.06 + 0.26 * 0.55
        self.poly(
            [(x - w1 * hgt, y1), (x + w1 * hgt, y1), (x + w0 * hgt, y0), (x - w0 * hgt, y0)],
            OBSTACLE,
            band,
        )

    def _draw_pole(self, obj: PlacedObject) -> None:
        x, foot, hgt, rng = obj.x_px, obj.foot_y_px, obj.height_px, self.rng
        metal = self.mats.add(Pattern.FLAT, _jitter(rng, _POLE_METAL, self.profile.color_jitter))
        half = max(0.6, 0.018 * hgt)
        self.rect(x - half, foot - hgt, x + half, foot, POLE, metal)
        if rng.random() < 0.6:
            sign = self.mats.add(Pattern.FLAT, _jitter(rng, _SIGN, self.profile.color_jitter))
            size = 0.09 * hgt
            cy = foot - hgt + size
            if rng.random() < 0.5:
                self.ellipse(x, cy, size, size, POLE, sign)
            else:
                self.rect(x - size * 1.2, cy - size, x + size * 1.2, cy + size * 0.8, POLE, sign)

    def _draw_bush(self, obj: PlacedObject) -> None:
        x, foot, hgt, rng = obj.x_px, obj.foot_y_px, obj.height_px, self.rng
        material = self.background_materials[VEGETATION]
        for _ in range(int(rng.integers(2, 5))):
            r = hgt * rng.uniform(0.4, 0.7)
            cx = x + rng.uniform(-0.8, 0.8) * hgt
            self.ellipse(
                cx,
                foot - r * rng.uniform(0.6, 1.0),
                r * rng.uniform(1.0, 1.5),
                r,
                VEGETATION,
                material,
            )

    def _draw_rock(self, obj: PlacedObject) -> None:
        x, foot, hgt, rng = obj.x_px, obj.foot_y_px, obj.height_px, self.rng
        color = self._object_color(_ROCK, obj)
        material = self.mats.add(Pattern.GRAIN, color, _scale(color, 0.8))
        angles = np.sort(rng.uniform(0, np.pi, int(rng.integers(5, 8))))
        radii = rng.uniform(0.6, 1.0, angles.size) * hgt
        pts = [
            (x + r * 1.3 * math.cos(a), foot - r * math.sin(a))
            for a, r in zip(angles, radii, strict=True)
        ]
        self.poly([(x + 1.3 * hgt, foot), *pts, (x - 1.3 * hgt, foot)], OBSTACLE, material)

    def _draw_patch(self, obj: PlacedObject) -> None:
        x, foot, hgt, rng = obj.x_px, obj.foot_y_px, obj.height_px, self.rng
        # A flat patch of ground seen in perspective: wide and thin.
        self.ellipse(
            x,
            foot,
            hgt * rng.uniform(1.5, 3.0),
            hgt * rng.uniform(0.2, 0.4),
            TERRAIN,
            self.background_materials[TERRAIN],
        )


def _jitter_by(color: Color, shift: npt.NDArray[np.float64]) -> Color:
    r, g, b = np.clip(np.asarray(color) + shift, 0.0, 255.0)
    return (float(r), float(g), float(b))
