"""Instrumentation that the two-process test runs load through ``custom_imports``.

Each rank writes what it saw to ``WORK_DIR/probe/rank<R>.pth`` when training ends, so that the
test process can compare the ranks: the wrapped model, the parameters of the student and the
teacher, the losses of every iteration, and which rank saved checkpoints and student exports.
"""

import os
import os.path as osp
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch.nn.modules.batchnorm import _NormBase

import kd_plugin.hooks.student_export_hook as student_export_hook
from kd_plugin.losses.yolov5_head import HeadOutputs, YOLOv5ClsDistillLoss
from kd_plugin.registry import HOOKS, MODELS

# The tests run two training processes on a machine with two shared cores.
torch.set_num_threads(1)


@MODELS.register_module()
class ProbeScaledClsDistillLoss(YOLOv5ClsDistillLoss):
    """YOLOv5ClsDistillLoss of the student's class logits times a learnable scale.

    The scale is a trainable parameter outside the student, like the connector of a feature
    distillation loss: it gets no gradient from the losses once distillation stops.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.logit_scale = nn.Parameter(torch.ones(()))

    def forward(
        self,
        student_outputs: HeadOutputs,
        teacher_outputs: HeadOutputs,
        temperature: Optional[float] = None,
    ) -> torch.Tensor:
        cls_scores, bbox_preds, objectnesses = student_outputs
        scaled = [level_scores * self.logit_scale for level_scores in cls_scores]
        return super().forward((scaled, bbox_preds, objectnesses), teacher_outputs, temperature)


def _norm_layer_types(module: nn.Module) -> List[str]:
    return sorted(
        {type(layer).__name__ for layer in module.modules() if isinstance(layer, _NormBase)}
    )


def _detached(named_tensors) -> Dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in named_tensors}


@HOOKS.register_module()
class DistributedProbeHook(Hook):
    """Record on every rank what the distributed tests check, and write it after training."""

    priority = 'LOWEST'

    def __init__(self):
        self.iterations: List[dict] = []
        self.saved_epochs: List[int] = []
        self.exported_paths: List[str] = []

    def before_run(self, runner) -> None:
        # Record the output path of every student export that StudentExportHook writes.
        export = student_export_hook.export_student_checkpoint

        def recording_export(checkpoint: str, output: str, *args, **kwargs):
            self.exported_paths.append(output)
            return export(checkpoint, output, *args, **kwargs)

        student_export_hook.export_student_checkpoint = recording_export

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        distiller = runner.model.module if is_model_wrapper(runner.model) else runner.model
        losses = {name: float(value) for name, value in (outputs or {}).items()}
        self.iterations.append(
            dict(
                iter=runner.iter,
                epoch=runner.epoch,
                distill_enabled=distiller.distill_enabled,
                losses=losses,
            )
        )

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Runner.save_checkpoint calls this hook, and only on the rank that writes the file.
        self.saved_epochs.append(runner.epoch)

    def after_train(self, runner) -> None:
        model = runner.model
        distiller = model.module if is_model_wrapper(model) else model
        teacher = distiller.teacher
        wrapped_ids = {id(param) for param in model.parameters()}
        record = dict(
            rank=get_rank(),
            world_size=get_world_size(),
            wrapper=type(model).__name__,
            device_ids=getattr(model, 'device_ids', 'no device_ids attribute'),
            find_unused_parameters=getattr(model, 'find_unused_parameters', None),
            optim_wrapper=type(runner.optim_wrapper).__name__,
            epoch=runner.epoch,
            iter=runner.iter,
            student_params=_detached(distiller.student.named_parameters()),
            distill_params=_detached(distiller.distill_losses.named_parameters()),
            teacher_state=_detached(teacher.state_dict().items()),
            teacher_params_wrapped=sum(id(param) in wrapped_ids for param in teacher.parameters()),
            teacher_training=any(module.training for module in teacher.modules()),
            teacher_requires_grad=any(param.requires_grad for param in teacher.parameters()),
            student_norm_types=_norm_layer_types(distiller.student),
            teacher_norm_types=_norm_layer_types(teacher),
            iterations=self.iterations,
            saved_epochs=self.saved_epochs,
            exported_paths=self.exported_paths,
            num_threads=torch.get_num_threads(),
        )
        probe_dir = osp.join(runner.work_dir, 'probe')
        os.makedirs(probe_dir, exist_ok=True)
        torch.save(record, osp.join(probe_dir, f'rank{record["rank"]}.pth'))
