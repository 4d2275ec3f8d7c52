"""The training run, top to bottom: datasets, model, stages, results.

:func:`train` is the whole program behind ``mess_train``; :func:`train_stage`
is the loop every stage shares (the :class:`~mess_ros.train.stages.StagePlan`
says what differs). Read them in order: nothing else hides control flow.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.data.datasets import SegmentationDataset, build_dataset, verify_dataset
from mess_ros.data.labels import LabelSet
from mess_ros.errors import MessError
from mess_ros.model.checkpoint import load_checkpoint, save_checkpoint
from mess_ros.model.messnet import MESSNet, ModelSpec
from mess_ros.train.batches import training_batches
from mess_ros.train.calibration import build_calibration_cache, evaluate_exits
from mess_ros.train.config import CONVERT_MODE, TrainConfig
from mess_ros.train.convert import load_source_model
from mess_ros.train.device import autocast, check_amp, make_grad_scaler
from mess_ros.train.distributed import DistContext, distributed_session
from mess_ros.train.errors import TrainError
from mess_ros.train.losses import exit_losses
from mess_ros.train.rundir import RunDir, TrainLog, TrainState
from mess_ros.train.stages import (
    StagePlan,
    build_model,
    plan_stages,
    prepare_model,
    set_train_mode,
    trainable_parameters,
)


@dataclass
class TrainResult:
    """What a call to :func:`train` produced.

    ``finished`` is False when ``max_steps`` paused the run (resume it with
    ``resume=True``); ``metrics`` is the content of ``metrics.json`` on rank 0
    of a finished run and None otherwise.
    """

    run_dir: Path
    model: MESSNet
    finished: bool
    metrics: dict[str, Any] | None


@dataclass
class RunContext:
    """What every stage needs besides its plan (keeps the stage signature short)."""

    config: TrainConfig
    ctx: DistContext
    device: torch.device
    train_set: SegmentationDataset
    val_set: SegmentationDataset
    run_dir: RunDir
    log: TrainLog
    progress: bool
    started: float
    elapsed_before: float
    steps_left: int | None

    def elapsed_s(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started


def train(
    config: TrainConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
) -> TrainResult:
    """Train ``config`` into the run directory ``out_dir``.

    With ``resume`` the run continues from the last saved step of its
    current stage (the config must be the run's own, see
    :meth:`RunDir.load_state`). ``max_steps`` runs at most that many steps in
    this call, saves, and returns unfinished: a run can be spread over
    several time slots.
    """
    run_dir = RunDir(out_dir)
    if not resume:
        run_dir.check_new()
    with distributed_session(config.device) as (ctx, device):
        check_amp(config.amp, device)
        train_set, val_set, labels = load_datasets(config, progress=progress and ctx.is_main)
        num_classes = resolve_num_classes(config, labels)
        state = run_dir.load_state(config) if resume else None
        if ctx.is_main:
            run_dir.write_config(config)

        seed_everything(config.seed)
        if state is not None:
            model = restore_model(state)
        elif config.mode == CONVERT_MODE:
            model = load_source_model(config, labels)
        else:
            model = build_model(config, num_classes)
        plans = plan_stages(config, model.points)
        log = TrainLog(run_dir.log_path)
        if ctx.is_main:
            repeated = log.start([plan.name for plan in plans], resume_at=_resume_point(state))
            if resume:
                print(resume_message(state, plans, repeated, config.checkpoint_every), flush=True)
        run = RunContext(
            config=config,
            ctx=ctx,
            device=device,
            train_set=train_set,
            val_set=val_set,
            run_dir=run_dir,
            log=log,
            progress=progress and ctx.is_main,
            started=time.monotonic(),
            elapsed_before=state.elapsed_s if state is not None else 0.0,
            steps_left=max_steps,
        )

        for stage_index, plan in enumerate(plans):
            if state is not None and stage_index < state.stage_index:
                continue  # finished before the resumed step
            if run.steps_left == 0:
                return TrainResult(run_dir.root, model, finished=False, metrics=None)
            stage_state = state if state is not None and state.stage_index == stage_index else None
            model, completed = train_stage(model, plan, stage_index, run, stage_state)
            if not completed:
                return TrainResult(run_dir.root, model, finished=False, metrics=None)

        metrics = None
        if ctx.is_main:
            metrics = write_results(model, labels, run, plans)
        ctx.barrier()
        return TrainResult(run_dir.root, model, finished=True, metrics=metrics)


def train_stage(
    model: MESSNet,
    plan: StagePlan,
    stage_index: int,
    run: RunContext,
    state: TrainState | None,
) -> tuple[MESSNet, bool]:
    """Run one stage from its first (or resumed) step; returns the model and whether it finished.

    A stage stops early only when the run's ``max_steps`` budget runs out;
    its state is saved at that step so that a resume continues there.
    """
    config, ctx, device = run.config, run.ctx, run.device

    # The model gets the plan's exits; the plan decides what learns.
    model = prepare_model(model, plan).to(device)
    parameters = trainable_parameters(model, plan)
    optimizer = make_optimizer(parameters, plan.lr, config.weight_decay)
    scaler = make_grad_scaler(config.amp, device)
    start_step = 0
    if state is not None:
        optimizer.load_state_dict(state.optimizer)
        if state.scaler and scaler.is_enabled():  # empty when saved without fp16
            scaler.load_state_dict(state.scaler)
        torch.set_rng_state(state.torch_rng)
        if state.cuda_rng is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state.cuda_rng, device)
        start_step = state.step
    network = ctx.wrap(model, device)
    batches = training_batches(
        run.train_set, config, ctx, stage_index, start_step, pin_memory=device.type == "cuda"
    )
    val_count = len(run.val_set) if config.val_images == 0 else config.val_images
    val_indices = list(range(min(val_count, len(run.val_set))))
    last_step = plan.steps
    if run.steps_left is not None:
        last_step = min(plan.steps, start_step + run.steps_left)

    set_train_mode(model, plan)
    bar = tqdm(
        total=plan.steps,
        initial=start_step,
        desc=plan.name,
        unit="step",
        disable=not run.progress,
        dynamic_ncols=True,
    )
    for step in range(start_step, last_step):
        lr = learning_rate(step, plan.steps, plan.lr, config.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, masks = next(batches)
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)

        with autocast(config.amp, device):
            logits = network(images)
        loss, ce_loss, distill_loss = stage_loss(logits, masks, plan, config)
        if not math.isfinite(loss.item()):
            msg = (
                f"{plan.name} diverged: the loss is {loss.item()} at step {step + 1}; "
                "lower lr (or use amp 'off'/'bf16'), then restart or --resume "
                "from the last saved step"
            )
            raise TrainError(msg)
        optimizer.zero_grad(set_to_none=True)
        scaled_loss: Tensor = scaler.scale(loss)
        torch.autograd.backward(scaled_loss)
        if config.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        scaler.step(optimizer)
        scaler.update()

        done = step + 1
        row: dict[str, Any] = {
            "stage": plan.name,
            "step": done,
            "loss": loss.item(),  # this rank's batch only (no all-reduce per step)
            "ce_loss": ce_loss.item(),
            "distill_loss": distill_loss.item(),
            "lr": lr,
        }
        if done % config.eval_every == 0 or done == plan.steps:
            if ctx.is_main:
                val_miou = evaluate_exits(model, run.val_set, config.input_hw, device, val_indices)
                row.update(_validation_summary(val_miou))
            ctx.barrier()
            set_train_mode(model, plan)
        if done % config.checkpoint_every == 0 or done in (plan.steps, last_step):
            if ctx.is_main:
                run.run_dir.save_state(
                    snapshot(model, optimizer, scaler, run, stage_index, plan, done)
                )
            ctx.barrier()
        if ctx.is_main:
            row["elapsed_s"] = run.elapsed_s()
            run.log.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.2e}", refresh=False)
        bar.update(1)
    bar.close()
    ctx.sync_buffers(model)
    if run.steps_left is not None:
        run.steps_left -= last_step - start_step
    model.eval()
    return model, last_step == plan.steps


def stage_loss(
    logits: dict[str, Tensor], masks: Tensor, plan: StagePlan, config: TrainConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """The stage's objective: weighted exit cross-entropy plus weighted distillation.

    Returns the total and its two (detached) parts for logging. With
    ``loss_stride`` s > 1 the labels are subsampled at the centre of each
    s x s cell and the logits upsampled to that size instead.
    """
    stride = config.loss_stride
    if stride > 1:
        masks = masks[:, stride // 2 :: stride, stride // 2 :: stride]
    ce_loss, distill_loss = exit_losses(
        logits,
        masks,
        plan.ce_weights,
        plan.distill_weights,
        FINAL_EXIT,
        config.distill_temperature,
    )
    return ce_loss + distill_loss, ce_loss.detach(), distill_loss.detach()


def learning_rate(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up, then the "poly" decay (power 0.9) of DeepLab, per stage."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * math.pow(1.0 - progress, 0.9)


def make_optimizer(
    parameters: list[nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW, with weight decay on convolution/linear weights only.

    Decaying batch-norm scales and biases only pulls them towards zero
    without regularising anything.
    """
    decay = [p for p in parameters if p.ndim >= 2]
    no_decay = [p for p in parameters if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def load_datasets(
    config: TrainConfig, *, progress: bool = False
) -> tuple[SegmentationDataset, SegmentationDataset, LabelSet]:
    """Both splits, every file decoded once and checked to share one label set.

    Every pair is read before the first step, so a broken file (unreadable, a
    mask of another size, ids outside the label set) stops the run at once,
    with all of them listed, instead of at the step that first draws it.
    """
    datasets = []
    for key, spec in (("dataset", config.dataset), ("val_dataset", config.val_dataset)):
        try:
            dataset = build_dataset(spec)
            verify_dataset(dataset, progress=progress)
        except MessError as err:
            raise TrainError(f"{key}: {err}") from err
        if len(dataset) == 0:
            raise TrainError(f"{key}: the dataset is empty ({spec.to_dict()})")
        datasets.append(dataset)
    train_set, val_set = datasets
    if train_set.labels != val_set.labels:
        msg = (
            f"dataset and val_dataset use different label sets "
            f"({train_set.labels.name!r} and {val_set.labels.name!r})"
        )
        raise TrainError(msg)
    return train_set, val_set, train_set.labels


def resolve_num_classes(config: TrainConfig, labels: LabelSet) -> int:
    if config.mode == CONVERT_MODE and config.num_classes != labels.num_classes:
        msg = (
            f"the source network {config.source_network!r} predicts {config.num_classes} "
            f"classes but the dataset's label set {labels.name!r} has {labels.num_classes}; "
            "convert it on data of the label set it was trained with"
        )
        raise TrainError(msg)
    if config.num_classes not in (0, labels.num_classes):
        msg = (
            f"num_classes is {config.num_classes} but the dataset's label set {labels.name!r} "
            f"has {labels.num_classes} classes; set num_classes to 0 or {labels.num_classes}"
        )
        raise TrainError(msg)
    return labels.num_classes


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def restore_model(state: TrainState) -> MESSNet:
    """The model exactly as saved in a training state (its exits included)."""
    try:
        model = MESSNet(ModelSpec.from_dict(state.model_spec))
        model.load_state_dict(state.model)
    except (MessError, RuntimeError) as err:
        raise TrainError(f"the saved training state does not match its model: {err}") from err
    return model


def snapshot(
    model: MESSNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    run: RunContext,
    stage_index: int,
    plan: StagePlan,
    done: int,
) -> TrainState:
    return TrainState(
        stage_index=stage_index,
        stage_name=plan.name,
        step=done,
        config=run.config.to_dict(),
        model_spec=model.spec.to_dict(),
        model={key: value.detach().cpu() for key, value in model.state_dict().items()},
        optimizer=optimizer.state_dict(),
        scaler=scaler.state_dict(),
        torch_rng=torch.get_rng_state(),
        cuda_rng=torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        elapsed_s=run.elapsed_s(),
    )


def write_results(
    model: MESSNet, labels: LabelSet, run: RunContext, plans: list[StagePlan]
) -> dict[str, Any]:
    """Checkpoint, calibration cache and metrics of the trained model (rank 0 only).

    The cache is computed from the checkpoint as read back from disk, so it
    describes exactly the weights that ship; metrics are derived from the
    cache, so ``metrics.json`` and the deployment search can never disagree.
    """
    config, paths = run.config, run.run_dir
    save_checkpoint(paths.checkpoint_path, model, labels.to_dict(), config.to_dict())
    checkpoint = load_checkpoint(paths.checkpoint_path)
    cache = build_calibration_cache(
        checkpoint,
        run.val_set,
        config.input_hw,
        run.device,
        progress=run.progress,
        dataset_info=config.val_dataset.to_dict(),
    )
    cache.save(paths.calibration_path)
    metrics = cache.metrics()
    metrics["training"] = {
        "mode": config.mode,
        "stages": {plan.name: plan.steps for plan in plans},
        "elapsed_s": round(run.elapsed_s(), 1),
        "device": str(run.device),
        "world_size": run.ctx.world_size,
    }
    save_checkpoint(paths.checkpoint_path, model, labels.to_dict(), config.to_dict(), metrics)
    paths.write_metrics(metrics)
    return metrics


def _validation_summary(val_miou: dict[str, float]) -> dict[str, float]:
    early = [value for exit_id, value in val_miou.items() if exit_id != FINAL_EXIT]
    summary = {"val_miou_final": val_miou[FINAL_EXIT]}
    if early:
        summary["val_miou_exits_mean"] = float(np.nanmean(early))
    return summary


def resume_message(
    state: TrainState | None, plans: list[StagePlan], repeated: int, every: int
) -> str:
    """Where a resumed run continues and how much work it does again.

    State is saved every ``checkpoint_every`` steps (and at the end of each
    stage); steps run after the last save are lost on an interrupt.
    """
    again = (
        f"{repeated} step(s) that ran after it are repeated" if repeated else "no step is repeated"
    )
    if state is None:
        return (
            f"resuming: no step of this run was saved yet (state is saved every {every} "
            f"steps), so training starts from the beginning; {again}"
        )
    plan = plans[state.stage_index]
    return (
        f"resuming {plan.name} at step {state.step} of {plan.steps}, the last saved step "
        f"(state is saved every {every} steps); {again}"
    )


def _resume_point(state: TrainState | None) -> tuple[int, int] | None:
    return None if state is None else (state.stage_index, state.step)
