"""Tests of DistillOptimizerConstructor on a real tiny MMYOLO YOLOv5 student."""

import copy
import logging
import re
from typing import Dict, List, Optional, Set

import pytest
import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper, build_optim_wrapper

from kd_plugin.optim import DistillOptimizerConstructor, MultistepSGD

BASE_LR = 0.01
WEIGHT_DECAY = 0.0005
LR_MULT = 2.0
DECAY_MULT = 0.5


def _optim_wrapper_cfg(**optimizer_options) -> dict:
    optimizer = dict(
        type='SGD', lr=BASE_LR, momentum=0.937, nesterov=True, weight_decay=WEIGHT_DECAY
    )
    optimizer.update(optimizer_options)
    return dict(type='OptimWrapper', optimizer=optimizer)


def _build(model: nn.Module, paramwise_cfg: dict = None, **optimizer_options) -> OptimWrapper:
    if paramwise_cfg is None:
        paramwise_cfg = dict(distill_lr_mult=LR_MULT, distill_decay_mult=DECAY_MULT)
    constructor = DistillOptimizerConstructor(
        _optim_wrapper_cfg(**optimizer_options), paramwise_cfg
    )
    return constructor(model)


def _build_yolov5_reference(model: nn.Module, **optimizer_options) -> OptimWrapper:
    from mmyolo.engine.optimizers import YOLOv5OptimizerConstructor

    constructor = YOLOv5OptimizerConstructor(
        _optim_wrapper_cfg(**optimizer_options), dict(base_total_batch_size=64)
    )
    return constructor(model)


def _group_names(optim_wrapper: OptimWrapper, model: nn.Module) -> List[List[str]]:
    names_by_id = {id(param): name for name, param in model.named_parameters()}
    return [
        [names_by_id[id(param)] for param in group['params']]
        for group in optim_wrapper.optimizer.param_groups
    ]


def _student_names(model: nn.Module, attribute: str, in_norm_layers: Optional[bool]) -> Set[str]:
    """Return names of student parameters stored as ``attribute`` of a module.

    ``in_norm_layers`` keeps only norm layers (True), only other layers (False) or both (None).
    """
    names = set()
    for module_name, module in model.student.named_modules():
        is_norm = isinstance(module, nn.modules.batchnorm._NormBase)
        if in_norm_layers is not None and is_norm != in_norm_layers:
            continue
        if isinstance(getattr(module, attribute, None), nn.Parameter):
            names.add(f'student.{module_name}.{attribute}')
    return names


def test_frozen_teacher_in_no_group(toy_distiller_factory) -> None:
    model = toy_distiller_factory()
    optim_wrapper = _build(model)

    grouped_ids = {id(p) for group in optim_wrapper.optimizer.param_groups for p in group['params']}
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    assert len(teacher_ids) > 0
    assert grouped_ids.isdisjoint(teacher_ids)


def test_groups_hold_expected_parameters(toy_distiller_factory) -> None:
    model = toy_distiller_factory()
    optim_wrapper = _build(model)
    names = _group_names(optim_wrapper, model)

    assert len(names) == 4
    assert set(names[0]) == _student_names(model, 'weight', in_norm_layers=False)
    assert set(names[1]) == _student_names(model, 'weight', in_norm_layers=True)
    assert set(names[2]) == _student_names(model, 'bias', in_norm_layers=None)
    assert names[3] == [
        'connectors.0.weight',
        'connectors.0.bias',
        'distill_losses.loss_weight',
    ]


def test_distill_group_multipliers(toy_distiller_factory) -> None:
    model = toy_distiller_factory()
    param_groups = _build(model).optimizer.param_groups

    assert param_groups[3]['lr'] == pytest.approx(BASE_LR * LR_MULT, rel=1e-12)
    assert param_groups[3]['weight_decay'] == pytest.approx(WEIGHT_DECAY * DECAY_MULT, rel=1e-12)
    assert param_groups[0]['lr'] == BASE_LR
    assert param_groups[0]['weight_decay'] == WEIGHT_DECAY
    # Norm weights and biases take SGD's default weight decay, 0, as in YOLOv5.
    assert param_groups[1]['weight_decay'] == 0
    assert param_groups[2]['weight_decay'] == 0


@pytest.mark.parametrize('frozen_stages', [-1, 1])
def test_student_groups_match_yolov5_constructor(toy_distiller_factory, frozen_stages: int) -> None:
    # frozen_stages=1 freezes the stem and the first backbone stage of the student, which
    # YOLOv5OptimizerConstructor keeps in its groups and this constructor leaves out.
    model = toy_distiller_factory(frozen_stages)
    param_groups = _build(model).optimizer.param_groups
    reference_groups = _build_yolov5_reference(model.student).optimizer.param_groups

    for index in range(3):
        expected = [p for p in reference_groups[index]['params'] if p.requires_grad]
        actual = param_groups[index]['params']
        assert len(actual) == len(expected), f'group {index}'
        assert all(a is e for a, e in zip(actual, expected)), f'group {index}'
        for key in ('lr', 'momentum', 'nesterov', 'weight_decay'):
            assert param_groups[index][key] == reference_groups[index][key], f'{key} {index}'


def test_frozen_backbone_stage_left_out(toy_distiller_factory) -> None:
    model = toy_distiller_factory(frozen_stages=1)
    param_groups = _build(model).optimizer.param_groups

    frozen_ids = {id(p) for p in model.student.backbone.stem.parameters()}
    grouped_ids = {id(p) for group in param_groups for p in group['params']}
    assert len(frozen_ids) > 0
    assert grouped_ids.isdisjoint(frozen_ids)
    assert all(p.requires_grad for group in param_groups for p in group['params'])


# Expected scale factors, world size 1, base_total_batch_size 64:
#   8  -> accumulate round(64 / 8) = 8, 8 * 8 / 64 = 1
#   16 -> accumulate 4, 16 * 4 / 64 = 1
#   24 -> accumulate round(2.67) = 3, 24 * 3 / 64 = 1.125
#   128 -> accumulate max(round(0.5), 1) = 1, 128 / 64 = 2
@pytest.mark.parametrize('batch_size_per_gpu,scale', [(8, 1.0), (16, 1.0), (24, 1.125), (128, 2.0)])
def test_weight_decay_scaled_like_yolov5(
    toy_distiller_factory, batch_size_per_gpu: int, scale: float
) -> None:
    model = toy_distiller_factory()
    param_groups = _build(model, batch_size_per_gpu=batch_size_per_gpu).optimizer.param_groups
    reference_groups = _build_yolov5_reference(
        model.student, batch_size_per_gpu=batch_size_per_gpu
    ).optimizer.param_groups

    assert param_groups[0]['weight_decay'] == reference_groups[0]['weight_decay']
    assert param_groups[0]['weight_decay'] == pytest.approx(WEIGHT_DECAY * scale, rel=1e-12)
    assert param_groups[3]['weight_decay'] == pytest.approx(
        WEIGHT_DECAY * scale * DECAY_MULT, rel=1e-12
    )


def test_no_distill_parameters_gives_three_groups(toy_distiller_factory) -> None:
    student = toy_distiller_factory().student
    param_groups = _build(student).optimizer.param_groups
    reference_groups = _build_yolov5_reference(student).optimizer.param_groups

    assert len(param_groups) == 3
    for group, reference in zip(param_groups, reference_groups):
        assert all(a is e for a, e in zip(group['params'], reference['params']))
        assert len(group['params']) == len(reference['params'])


def test_wrapped_model_is_unwrapped(toy_distiller_factory) -> None:
    # DataParallel without CUDA keeps the module on CPU and is an MMEngine model wrapper.
    model = toy_distiller_factory()
    names = _group_names(_build(nn.DataParallel(model)), model)
    expected_names = _group_names(_build(model), model)
    assert names == expected_names


def test_built_from_config_with_multistep_sgd(toy_distiller_factory) -> None:
    model = toy_distiller_factory()
    cfg = dict(
        constructor='kd_plugin.DistillOptimizerConstructor',
        optimizer=dict(
            type='kd_plugin.MultistepSGD',
            lr=BASE_LR,
            alpha=0.5,
            momentum=0.937,
            nesterov=True,
            weight_decay=WEIGHT_DECAY,
            batch_size_per_gpu=16,
        ),
        paramwise_cfg=dict(distill_lr_mult=LR_MULT, distill_prefixes=['connectors.']),
    )
    # Runner.from_cfg passes a ConfigDict, as read from a config file.
    optim_wrapper = build_optim_wrapper(model, ConfigDict(cfg))

    assert type(optim_wrapper) is OptimWrapper
    assert isinstance(optim_wrapper.optimizer, MultistepSGD)
    assert len(optim_wrapper.optimizer.param_groups) == 4
    assert optim_wrapper.optimizer.param_groups[3]['alpha'] == 0.5
    assert len(optim_wrapper.optimizer.param_groups[3]['params']) == 2


class _RecordHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def log_records(mmengine_instance_name: str) -> List[logging.LogRecord]:
    # The newest MMLogger is the 'current' one that print_log(logger='current') writes to.
    logger = MMLogger.get_instance(mmengine_instance_name)
    handler = _RecordHandler()
    logger.addHandler(handler)
    return handler.records


def _count_text(params) -> str:
    params = list(params)
    return f'{len(params)} tensors / {sum(p.numel() for p in params)} elements'


def test_split_logged_once(toy_distiller_factory, log_records: List[logging.LogRecord]) -> None:
    model = toy_distiller_factory()
    param_groups = _build(model).optimizer.param_groups

    messages = [r.getMessage() for r in log_records if 'Parameter groups' in r.getMessage()]
    assert len(messages) == 1
    for index, group in enumerate(param_groups):
        assert f'  {index} ' in messages[0]
        assert _count_text(group['params']) in messages[0], f'group {index}'
    frozen_text = _count_text(model.teacher.parameters())
    assert f'frozen (requires_grad=False), left out: {frozen_text}' in messages[0]


def test_uncovered_parameter_warned(
    toy_distiller_factory, log_records: List[logging.LogRecord]
) -> None:
    model = toy_distiller_factory()
    model.student.output_scale = nn.Parameter(torch.ones(()))
    param_groups = _build(model).optimizer.param_groups

    grouped_ids = {id(p) for group in param_groups for p in group['params']}
    warnings = [r for r in log_records if r.levelno == logging.WARNING]
    assert id(model.student.output_scale) not in grouped_ids
    assert len(warnings) == 1
    assert 'student.output_scale' in warnings[0].getMessage()


def test_custom_prefix_selects_distill_group(toy_distiller_factory) -> None:
    model = toy_distiller_factory()
    model.student.output_scale = nn.Parameter(torch.ones(()))
    paramwise_cfg = dict(distill_prefixes=['connectors.', 'distill_losses.', 'student.output_'])
    names = _group_names(_build(model, paramwise_cfg), model)

    assert 'student.output_scale' in names[3]


INVALID_PARAMWISE_CFGS = [
    (dict(distil_lr_mult=2.0), "['distil_lr_mult']"),
    (dict(bias_decay_mult=0.0), "['bias_decay_mult']"),
    (dict(distill_prefixes='connectors.'), "distill_prefixes='connectors.'"),
    (dict(distill_prefixes=('connectors.', '')), "distill_prefixes=('connectors.', '')"),
    (dict(distill_lr_mult=-1.0), 'distill_lr_mult=-1.0'),
    (dict(distill_decay_mult=float('nan')), 'distill_decay_mult=nan'),
    (dict(base_total_batch_size=0), 'base_total_batch_size=0'),
]


@pytest.mark.parametrize('paramwise_cfg,expected_text', INVALID_PARAMWISE_CFGS)
def test_invalid_paramwise_cfg_raises(paramwise_cfg: Dict, expected_text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(expected_text)):
        DistillOptimizerConstructor(_optim_wrapper_cfg(), paramwise_cfg)


@pytest.mark.parametrize('batch_size_per_gpu', [0, -8, 2.5, True])
def test_invalid_batch_size_raises(batch_size_per_gpu) -> None:
    with pytest.raises(ValueError, match=re.escape(f'batch_size_per_gpu={batch_size_per_gpu!r}')):
        DistillOptimizerConstructor(_optim_wrapper_cfg(batch_size_per_gpu=batch_size_per_gpu))


def test_missing_optimizer_raises() -> None:
    with pytest.raises(ValueError, match='"optimizer"'):
        DistillOptimizerConstructor(dict(type='OptimWrapper'))


def test_missing_lr_with_distill_group_raises(toy_distiller_factory) -> None:
    cfg = _optim_wrapper_cfg()
    del cfg['optimizer']['lr']
    constructor = DistillOptimizerConstructor(cfg)
    with pytest.raises(ValueError, match='Missing "lr"'):
        constructor(toy_distiller_factory())


def test_constructor_leaves_config_unchanged() -> None:
    cfg = _optim_wrapper_cfg(batch_size_per_gpu=16)
    original = copy.deepcopy(cfg)
    constructor = DistillOptimizerConstructor(cfg)
    constructor(nn.Conv2d(2, 2, 1))
    constructor(nn.Conv2d(2, 2, 1))
    assert cfg == original
