"""Measure a model's per-stage latency on this machine: the latency table.

Every backbone block, every exit head (with its confidence computation) and
every exit's output step (upsample + argmax to the input size + copy to the
host) is timed separately, through the same :class:`ModelExecutor` the engine
uses, so the table prices exactly the work the engine does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.latency_table import LatencyStat, LatencyTable
from mess_ros.model import MESSNet, model_fingerprint
from mess_ros.runtime.backends import StageExecutor, create_executor
from mess_ros.runtime.errors import EngineError
from mess_ros.runtime.executor import device_name, resolve_device, software_versions

# Pixel threshold used while profiling; the cost of the confidence does not depend on it.
_PROFILE_PIXEL_THRESHOLD = 0.9


def profile_model(
    model: MESSNet,
    input_hw: tuple[int, int],
    device: str | torch.device = "cpu",
    warmup: int = 3,
    repeats: int = 20,
    progress: bool = False,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    quantile: float = 0.9,
    exit_ids: Sequence[str] | None = None,
    model_fingerprint_hex: str | None = None,
    executor: StageExecutor | None = None,
    backend: str = "torch",
    checkpoint_path: Path | None = None,
) -> LatencyTable:
    """Time every stage ``repeats`` times after ``warmup`` untimed passes.

    The model is moved to ``device`` (unless an ``executor`` that already
    holds it is given), to run on ``backend`` (``auto`` resolved as the engine
    does; the export cache goes beside ``checkpoint_path``). ``exit_ids`` limits
    the heads profiled (default: all of the model's); the final exit is always
    included. On CUDA every stage is bracketed by device synchronisation, so
    the times are the kernels' and not just their launch.
    """
    if warmup < 0 or repeats < 1:
        raise EngineError(f"profiling needs warmup >= 0 and repeats >= 1, got {warmup}, {repeats}")
    if not 0.0 < quantile < 1.0:
        raise EngineError(f"profiling quantile must be in (0, 1), got {quantile}")
    if executor is None:
        name = str(device)
        choice = resolve_device(name, require_cuda=True, precision=precision)
        executor = create_executor(
            backend,
            model,
            choice.device,
            (int(input_hw[0]), int(input_hw[1])),
            precision=choice.precision,
            channels_last=channels_last,
            checkpoint_path=checkpoint_path,
            threads=torch.get_num_threads(),
            fingerprint=model_fingerprint_hex,
            progress=progress,
        )
    wanted = list(model.exit_ids) if exit_ids is None else [*exit_ids, FINAL_EXIT]
    unknown = sorted(set(wanted) - set(model.exit_ids))
    if unknown:
        raise EngineError(
            f"cannot profile unknown exit(s) {', '.join(unknown)}; "
            f"the model has: {', '.join(model.exit_ids)}"
        )
    exits_at: dict[str, list[str]] = {}
    for exit_id in model.exit_ids:  # depth order, as the engine evaluates them
        if exit_id in wanted:
            exits_at.setdefault(model.exit_point(exit_id), []).append(exit_id)

    height, width = int(input_hw[0]), int(input_hw[1])
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(3, height, width, generator=generator).numpy()
    samples: dict[str, dict[str, list[float]]] = {"segments": {}, "heads": {}, "outputs": {}}

    def timed(section: str, name: str, start_ms: float, record: bool) -> float:
        now = executor.clock_ms()
        if record:
            samples[section].setdefault(name, []).append(now - start_ms)
        return now

    iterations = range(warmup + repeats)
    bar = tqdm(iterations, desc="profiling", unit="pass", disable=not progress)
    with executor.context():
        for iteration in bar:
            record = iteration >= warmup
            features = executor.to_device(image)
            previous: str | None = None
            start = executor.clock_ms()
            for point in executor.blocks:
                features = executor.segment(features, previous, point)
                start = timed("segments", point, start, record)
                previous = point
                for exit_id in exits_at.get(point, ()):
                    logits = executor.head(exit_id, features)
                    executor.confidence(logits, _PROFILE_PIXEL_THRESHOLD)
                    start = timed("heads", exit_id, start, record)
                    executor.output(logits, (height, width))
                    start = timed("outputs", exit_id, start, record)
    bar.close()

    def stats(section: str) -> dict[str, LatencyStat]:
        return {k: LatencyStat.from_samples(v, quantile) for k, v in samples[section].items()}

    where = torch.device(executor.device_label)
    return LatencyTable(
        model_fingerprint=model_fingerprint_hex or model_fingerprint(model),
        input_hw=(height, width),
        device=str(where),
        device_name=device_name(where),
        versions=software_versions(),
        quantile=quantile,
        segments=stats("segments"),
        heads=stats("heads"),
        outputs=stats("outputs"),
        precision=executor.precision,
        notes={
            "warmup": warmup,
            "repeats": repeats,
            "channels_last": executor.channels_last,
            "created_unix_s": int(time.time()),
        },
        backend=executor.backend,
    )
