"""A detector that trains a student detector to match a frozen teacher detector."""

import types
from typing import Any, Dict, List, Optional, Union

import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.logging import print_log
from mmengine.model import BaseModel

from ..losses.base import DistillContext, DistillLoss, validate_temperature
from ..registry import MODELS
from .build import ModelSource, build_detector
from .frozen_teacher import FrozenTeacher
from .preprocessing import TeacherInputConverter

_TEACHER_KEYS = ('config', 'checkpoint', 'strict', 'trust_checkpoint')
# Side in pixels of the zero batch that probes output shapes for connectors. A multiple of 128,
# so that every level up to stride 128 (RetinaNet's P7) has whole cells.
_PROBE_INPUT_SIZE = 256


@MODELS.register_module()
class DetectionDistiller(BaseModel):
    """Train ``student`` with its own losses plus distillation losses against ``teacher``.

    Nothing here depends on the detector family. The distillation losses name the submodules
    whose outputs they compare (``'bbox_head'`` for head outputs, ``'neck'`` for features). The
    distiller records those outputs while the teacher runs under ``no_grad`` and the student
    computes its usual losses.

    The teacher is held by :class:`FrozenTeacher`, outside this module's parameters, buffers and
    state dict: it stays in eval mode, gets no gradients, and never enters the optimizer, EMA,
    DDP or checkpoints. ``predict`` and ``tensor`` modes run the student alone.

    Args:
        student: The student's model config: a dict (usually the ``model`` of the ``_base_``
            config), a config file or a ``package::`` config path.
        teacher: ``dict(config=..., checkpoint=..., strict=True, trust_checkpoint=False)``, see
            :class:`FrozenTeacher`.
        distill_losses: Maps each loss name to a :class:`DistillLoss` config. Names must start
            with ``loss_kd_`` (MMEngine sums every output key that contains ``loss``). Types are
            looked up in kd_plugin's registry first. A config without ``temperature`` gets the
            distiller's.
        temperature: Default softening temperature of the distillation losses, > 0.
        data_preprocessor: Unused; the student's data preprocessor serves both models. When the
            teacher's preprocessor has another mean, std or channel order, each batch is
            converted to it, see :class:`TeacherInputConverter`.
        init_cfg: MMEngine initialisation config of the student.
    """

    def __init__(
        self,
        student: ModelSource,
        teacher: Dict[str, Any],
        distill_losses: Dict[str, dict],
        temperature: float = 1.0,
        data_preprocessor: Optional[dict] = None,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__(init_cfg=init_cfg)
        self.temperature = validate_temperature(temperature)
        self.student = build_detector(student)
        # Building the teacher draws random numbers for layers its checkpoint then overwrites.
        # A forked generator keeps them from shifting the student's initialisation, so a
        # distilled run starts from the same weights as the baseline with the same seed.
        with torch.random.fork_rng(devices=[]):
            self._teacher = FrozenTeacher(**self._check_teacher_config(teacher))
        self.data_preprocessor = self.student.data_preprocessor
        self._teacher_inputs = TeacherInputConverter(
            self.data_preprocessor, self.teacher.data_preprocessor
        )

        # Set by DistillScheduleHook: the current multiple of each loss's base temperature, the
        # current multiple of every distillation loss weight, and whether distillation runs.
        self.temperature_factor = 1.0
        self.distill_weight_factor = 1.0
        self.distill_enabled = True

        self.distill_losses = nn.ModuleDict()
        self._records: Dict[str, Dict[str, Any]] = {'student': {}, 'teacher': {}}
        self._recording = False
        # Connectors draw random numbers too; the same fork keeps the student's init unchanged.
        with torch.random.fork_rng(devices=[]):
            for name, loss_cfg in distill_losses.items():
                self.distill_losses[name] = self._build_loss(name, loss_cfg)
            self._configure_losses_from_probe()
        if not self.distill_losses:
            raise ValueError('distill_losses is empty; give at least one distillation loss')
        self._needs_context = any(loss.needs_context for loss in self.distill_losses.values())
        self._log_setup()

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher detector (not a submodule of this model)."""
        return self._teacher.module

    @staticmethod
    def _check_teacher_config(teacher: Dict[str, Any]) -> Dict[str, Any]:
        if not isinstance(teacher, (dict, ConfigDict)):
            raise TypeError(
                'teacher must be a dict such as dict(config=..., checkpoint=...), '
                f'got {type(teacher).__name__}'
            )
        unknown = sorted(set(teacher) - set(_TEACHER_KEYS))
        if unknown:
            raise ValueError(f'unknown teacher keys {unknown}; allowed keys: {list(_TEACHER_KEYS)}')
        if 'config' not in teacher:
            raise ValueError(
                "teacher needs 'config': a model dict, a config file or a package path"
            )
        return dict(teacher)

    def _build_loss(self, name: str, loss_cfg: dict) -> DistillLoss:
        if not name.startswith('loss_kd_'):
            raise ValueError(
                f'distillation loss name {name!r} must start with "loss_kd_" so that MMEngine '
                'adds it to the total loss and logs it apart from the task losses'
            )
        loss_cfg = dict(loss_cfg)
        loss_cfg.setdefault('temperature', self.temperature)
        # Unprefixed types are kd_plugin losses; prefixed ones (e.g. 'mmdet.X') keep their scope.
        loss_cfg.setdefault('_scope_', 'kd_plugin')
        loss = MODELS.build(loss_cfg)
        if not isinstance(loss, DistillLoss):
            raise TypeError(
                f'{name}: {type(loss).__name__} is not a kd_plugin DistillLoss; distillation '
                'losses must subclass kd_plugin.losses.DistillLoss'
            )

        student_module = self._get_submodule(self.student, loss.student_module, 'student', name)
        teacher_module = self._get_submodule(self.teacher, loss.teacher_module, 'teacher', name)
        loss.check_modules(student_module, teacher_module)
        self._record_output('student', loss.student_module, student_module)
        self._record_output('teacher', loss.teacher_module, teacher_module)
        for path in loss.context_teacher_modules():
            module = self._get_submodule(self.teacher, path, 'teacher', name)
            self._record_output('teacher', path, module)
        return loss

    def _configure_losses_from_probe(self) -> None:
        """Pass both models' outputs for a zero batch to the losses that need output shapes.

        Both models run ``extract_feat`` (and, when a recorded module is not reached by it, the
        ``'tensor'`` mode forward) on a zero batch of _PROBE_INPUT_SIZE pixels under no_grad in
        eval mode, so BatchNorm statistics do not change. The student's training flags are
        restored afterwards, module by module.
        """
        losses = [loss for loss in self.distill_losses.values() if loss.needs_output_shapes]
        if not losses:
            return
        probed_paths = {
            'student': {loss.student_module for loss in losses},
            'teacher': {loss.teacher_module for loss in losses},
        }
        student_modes = [(module, module.training) for module in self.student.modules()]
        device = next(self.student.parameters()).device
        dummy = torch.zeros(1, 3, _PROBE_INPUT_SIZE, _PROBE_INPUT_SIZE, device=device)
        self.student.eval()
        self._recording = True
        try:
            with torch.no_grad():
                for model, role in ((self.student, 'student'), (self.teacher, 'teacher')):
                    model.extract_feat(dummy)
                    if any(self._records[role][path] is None for path in probed_paths[role]):
                        model(dummy, None, mode='tensor')
                for loss in losses:
                    student_outputs = self._records['student'][loss.student_module]
                    teacher_outputs = self._records['teacher'][loss.teacher_module]
                    if student_outputs is None or teacher_outputs is None:
                        raise ValueError(
                            f'{type(loss).__name__} needs the output shapes of student module '
                            f'{loss.student_module!r} and teacher module '
                            f'{loss.teacher_module!r}, but a probe forward did not reach them'
                        )
                    loss.configure_from_outputs(student_outputs, teacher_outputs)
        finally:
            self._recording = False
            self._clear_records()
            for module, training in student_modes:
                module.training = training

    @staticmethod
    def _get_submodule(model: nn.Module, path: str, role: str, loss_name: str) -> nn.Module:
        try:
            return model.get_submodule(path)
        except AttributeError:
            children = [child for child, _ in model.named_children()]
            raise ValueError(
                f'{loss_name}: the {role} ({type(model).__name__}) has no submodule {path!r}; '
                f'its top-level submodules are {children}'
            ) from None

    def _record_output(self, role: str, path: str, module: nn.Module) -> None:
        records = self._records[role]
        if path in records:
            return
        records[path] = None
        distiller = self

        # Forward hooks would miss the many MMDetection detectors that call
        # `self.bbox_head.forward(x)` directly, so the instance's forward is wrapped instead.
        # It is bound with MethodType, which deepcopy rebinds to the copy: an EMA copy of the
        # student then runs its own weights.
        def recording_forward(module_self, *args, **kwargs):
            output = type(module_self).forward(module_self, *args, **kwargs)
            if distiller._recording:
                records[path] = output
            return output

        module.forward = types.MethodType(recording_forward, module)

    def _clear_records(self) -> None:
        # Dropping the references frees the recorded tensors with the graph.
        for records in self._records.values():
            for path in records:
                records[path] = None

    def _log_setup(self) -> None:
        described = []
        for name, loss in self.distill_losses.items():
            details = f'weight={loss.loss_weight}, temperature={loss.temperature}'
            connectors = getattr(loss, 'connectors', None)
            if connectors:
                details += f', connectors on levels [{", ".join(connectors)}]'
            described.append(f'{name}: {type(loss).__name__}({details})')
        losses = ', '.join(described)
        student_params = sum(p.numel() for p in self.student.parameters())
        print_log(
            f'distillation: student {type(self.student).__name__} '
            f'({student_params / 1e6:.2f}M trainable parameters), teacher '
            f'{type(self.teacher).__name__} ({self._teacher.num_parameters() / 1e6:.2f}M frozen '
            f'parameters, checkpoint {self._teacher.checkpoint}), temperature '
            f'{self.temperature}, losses {{{losses}}}; {self._teacher_inputs.describe()}',
            logger='current',
        )

    def train(self, mode: bool = True) -> 'DetectionDistiller':
        """Set the student's training mode; the teacher stays in eval mode, BatchNorm included."""
        super().train(mode)
        self.teacher.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        # Device and dtype moves (.to, .cuda, .float, ...) reach the teacher only through here,
        # because it is not a registered submodule.
        super()._apply(fn, *args, **kwargs)
        self._teacher.apply(fn)
        return self

    def forward(
        self,
        inputs: torch.Tensor,
        data_samples: Optional[Union[List, dict]] = None,
        mode: str = 'tensor',
    ):
        """Run the distiller: ``'loss'`` trains, ``'predict'`` and ``'tensor'`` run the student.

        Args:
            inputs: Preprocessed images [N, 3, H, W].
            data_samples: What the student's data preprocessor produced for the batch.
            mode: ``'loss'``, ``'predict'`` or ``'tensor'``.
        """
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode in ('predict', 'tensor'):
            return self.student(inputs, data_samples, mode=mode)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def _add_idle_distill_parameters(
        self, losses: Dict[str, torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """Add the trainable parameters outside the student, times zero, to a student loss.

        Without distillation, the parameters of distillation losses and connectors get no
        gradient. DistributedDataParallel with ``find_unused_parameters=False`` (MMEngine's
        default) then raises on the next iteration, because it waits for their gradients. With
        the zero term they get zero gradients and take part in every gradient all-reduce, so no
        rank needs ``find_unused_parameters=True``. Weight decay still applies to them.
        """
        idle_params = [
            param
            for name, param in self.named_parameters()
            if param.requires_grad and not name.startswith('student.')
        ]
        loss_name = next(
            (name for name, value in losses.items() if 'loss' in name and torch.is_tensor(value)),
            None,
        )
        if idle_params and loss_name is not None:
            zero = sum(param.sum() for param in idle_params) * 0.0
            losses[loss_name] = losses[loss_name] + zero
        return losses

    def loss(
        self, inputs: torch.Tensor, data_samples: Optional[Union[List, dict]] = None
    ) -> Dict[str, torch.Tensor]:
        """Return the student's task losses and one ``loss_kd_*`` entry per distillation loss."""
        if not self.distill_enabled:
            return self._add_idle_distill_parameters(self.student.loss(inputs, data_samples))

        # Run both models once; the wrapped forwards keep the outputs the losses compare.
        self._recording = True
        try:
            with torch.no_grad():
                teacher_inputs = self._teacher_inputs(inputs, data_samples)
                self.teacher(teacher_inputs, data_samples, mode='tensor')
            losses = self.student.loss(inputs, data_samples)
        finally:
            self._recording = False
        student_records, teacher_records = self._records['student'], self._records['teacher']
        context = None
        if self._needs_context:
            context = DistillContext.from_batch(inputs, data_samples, teacher_records)

        try:
            for name, distill_loss in self.distill_losses.items():
                if name in losses:
                    raise ValueError(f'distillation loss {name!r} clashes with a student loss key')
                # Only losses that ask for the context get it, so losses written for the
                # three-argument forward (student, teacher, temperature) keep working.
                extra = dict(context=context) if distill_loss.needs_context else {}
                value = distill_loss(
                    student_records[distill_loss.student_module],
                    teacher_records[distill_loss.teacher_module],
                    temperature=distill_loss.temperature * self.temperature_factor,
                    **extra,
                )
                losses[name] = value * self.distill_weight_factor
        finally:
            self._clear_records()
        return losses
