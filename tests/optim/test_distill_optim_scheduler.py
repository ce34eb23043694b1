"""YOLOv5ParamSchedulerHook driving DistillOptimizerConstructor's groups in a real Runner."""

import copy
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner
from tiny_yolov5_distiller import ToyFeatureDistiller, build_toy_distiller, drop_mmengine_instances
from torch.utils.data import Dataset

BASE_LR = 0.01
LR_MULT = 2.0
BASE_MOMENTUM = 0.937
WARMUP_BIAS_LR = 0.1
WARMUP_MOMENTUM = 0.8
NUM_IMAGES = 4
BATCH_SIZE = 2
MAX_EPOCHS = 4
OPTIMIZER_TYPES = ('SGD', 'kd_plugin.MultistepSGD')


class _ImageDataset(Dataset):
    """NUM_IMAGES seeded random images of [3, 32, 32] in the MMEngine ``inputs`` format."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(NUM_IMAGES, 3, 32, 32, generator=generator)

    def __len__(self) -> int:
        return NUM_IMAGES

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        return dict(inputs=self.images[index])


class _ParamGroupRecorder(Hook):
    """Record the initial model state, and lr and momentum of every group at each iteration.

    The lowest priority makes it run after the scheduler hook has set this iteration's values.
    """

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.initial_state: Dict[str, torch.Tensor] = {}
        self.lrs: List[List[float]] = []
        self.momentums: List[List[float]] = []

    def before_train(self, runner: Runner) -> None:
        # The Runner has initialized the weights by now, so this is the state training starts from.
        self.initial_state = copy.deepcopy(runner.model.state_dict())

    def before_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Optional[dict] = None
    ) -> None:
        param_groups = runner.optim_wrapper.optimizer.param_groups
        self.lrs.append([float(group['lr']) for group in param_groups])
        self.momentums.append([float(group['momentum']) for group in param_groups])


def _train(
    optimizer_type: str, work_dir: Path, experiment_name: str
) -> Tuple[_ParamGroupRecorder, ToyFeatureDistiller]:
    model = build_toy_distiller()
    recorder = _ParamGroupRecorder()
    runner = Runner(
        model=model,
        work_dir=str(work_dir),
        experiment_name=experiment_name,
        train_dataloader=dict(
            dataset=_ImageDataset(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=BATCH_SIZE,
            num_workers=0,
        ),
        train_cfg=dict(by_epoch=True, max_epochs=MAX_EPOCHS),
        optim_wrapper=dict(
            constructor='kd_plugin.DistillOptimizerConstructor',
            optimizer=dict(
                type=optimizer_type,
                lr=BASE_LR,
                momentum=BASE_MOMENTUM,
                nesterov=True,
                weight_decay=0.0005,
                batch_size_per_gpu=BATCH_SIZE,
            ),
            paramwise_cfg=dict(distill_lr_mult=LR_MULT),
        ),
        default_hooks=dict(
            param_scheduler=dict(
                type='YOLOv5ParamSchedulerHook',
                scheduler_type='linear',
                lr_factor=0.01,
                max_epochs=MAX_EPOCHS,
                warmup_epochs=1,
                warmup_bias_lr=WARMUP_BIAS_LR,
                warmup_momentum=WARMUP_MOMENTUM,
                warmup_mim_iter=2,
            ),
            checkpoint=None,
        ),
        custom_hooks=[recorder],
        default_scope='mmyolo',
        randomness=dict(seed=0),
    )
    runner.train()
    return recorder, model


# The hook warms up for max(round(warmup_epochs * iters per epoch), warmup_mim_iter)
# = max(1 * 2, 2) = 2 iterations, interpolating from 0 (groups 0, 1, 3) or warmup_bias_lr
# (group 2) at iter 0 to initial_lr * f(epoch) at iter 2, where initial_lr is 0.01 for groups
# 0-2 and 0.01 * LR_MULT = 0.02 for group 3, and f(e) = (1 - e / 4) * 0.99 + 0.01 gives
# f(0) = 1, f(1) = 0.7525, f(2) = 0.505. Iter 3 ends the warm-up without changing lr, and each
# later epoch end sets lr = initial_lr * f(epoch just finished).
#   iter (epoch)  groups 0, 1        group 2                    group 3
#   0 (0)         0                  0.1                        0
#   1 (0)         0.005              0.1 + (0.01 - 0.1) / 2     0.01
#   2, 3 (1)      0.01 * f(1)        0.01 * f(1)                0.02 * f(1)
#   4, 5 (2)      0.01 * f(1)        0.01 * f(1)                0.02 * f(1)
#   6, 7 (3)      0.01 * f(2)        0.01 * f(2)                0.02 * f(2)
# Momentum goes from 0.8 at iter 0 over 0.8685 at iter 1 to 0.937 from iter 2 on.
EXPECTED_LRS = [
    [0.0, 0.0, 0.1, 0.0],
    [0.005, 0.005, 0.055, 0.01],
    [0.007525, 0.007525, 0.007525, 0.01505],
    [0.007525, 0.007525, 0.007525, 0.01505],
    [0.007525, 0.007525, 0.007525, 0.01505],
    [0.007525, 0.007525, 0.007525, 0.01505],
    [0.00505, 0.00505, 0.00505, 0.0101],
    [0.00505, 0.00505, 0.00505, 0.0101],
]
EXPECTED_MOMENTUMS = [0.8, 0.8685] + [0.937] * 6


@pytest.fixture(scope='module')
def training_runs(tmp_path_factory) -> Iterator[Dict[str, Tuple]]:
    """Train once with torch SGD and once with MultistepSGD, shared by the tests below."""
    prefix = f'kd_plugin_optim_scheduler_{uuid.uuid4().hex}'
    # One intra-op thread: convolutions on 32x32 images gain nothing from more. On 2 CPU cores
    # shared with another training job, both runs took about 2 s with one thread and 50 s with
    # two, because the OpenMP threads spin while they wait for a core.
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {}
        for optimizer_type in OPTIMIZER_TYPES:
            name = optimizer_type.replace('.', '_')
            runs[optimizer_type] = _train(
                optimizer_type, tmp_path_factory.mktemp(name), f'{prefix}_{name}'
            )
    finally:
        torch.set_num_threads(num_threads)
    yield runs
    drop_mmengine_instances(prefix)


@pytest.mark.parametrize('optimizer_type', OPTIMIZER_TYPES)
def test_hook_sets_expected_lr(training_runs, optimizer_type: str) -> None:
    recorder, _ = training_runs[optimizer_type]
    assert len(recorder.lrs) == len(EXPECTED_LRS)
    for iteration, (lrs, expected) in enumerate(zip(recorder.lrs, EXPECTED_LRS)):
        assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15), f'iter {iteration}'


@pytest.mark.parametrize('optimizer_type', OPTIMIZER_TYPES)
def test_hook_sets_expected_momentum(training_runs, optimizer_type: str) -> None:
    recorder, _ = training_runs[optimizer_type]
    assert len(recorder.momentums) == len(EXPECTED_MOMENTUMS)
    for iteration, (momentums, expected) in enumerate(zip(recorder.momentums, EXPECTED_MOMENTUMS)):
        assert momentums == pytest.approx([expected] * 4, rel=1e-12), f'iter {iteration}'


def test_multistep_sgd_schedule_equals_sgd(training_runs) -> None:
    sgd_recorder, _ = training_runs['SGD']
    multistep_recorder, _ = training_runs['kd_plugin.MultistepSGD']
    assert multistep_recorder.lrs == sgd_recorder.lrs
    assert multistep_recorder.momentums == sgd_recorder.momentums


@pytest.mark.parametrize('optimizer_type', OPTIMIZER_TYPES)
def test_training_updates_only_trainable_parts(training_runs, optimizer_type: str) -> None:
    recorder, model = training_runs[optimizer_type]
    final_state = model.state_dict()
    changed = {
        key
        for key, value in recorder.initial_state.items()
        if not torch.equal(value, final_state[key])
    }
    assert not any(key.startswith('teacher.') for key in changed)
    assert 'connectors.0.weight' in changed
    assert 'distill_losses.loss_weight' in changed
    assert 'student.backbone.stem.conv.weight' in changed
