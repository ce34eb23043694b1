"""Benchmark one distillation training step against its parts, on the BCCD configs.

Three child processes each build the models and a fixed set of real BCCD training batches, then
time one kind of step:

- ``student``: a train step of the student alone (forward, losses, backward, SGD update);
- ``teacher``: a no-grad forward of the teacher;
- ``distill``: a train step of the distiller (teacher forward, student train step, distillation
  losses).

The report gives ``distill / (student + teacher)``: 1.0 means distillation costs nothing beyond
running both models, and the peak memory of distillation over student-only training (peak RSS of
the process on CPU, ``torch.cuda.max_memory_allocated`` on GPU). Separate processes keep one
mode's memory from hiding another's peak.
"""

import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

KD_CONFIG = 'configs/yolov5/bccd/kd_yolov5_s-to-n_320_20e_bccd.py'
MODES = ('student', 'teacher', 'distill')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Time a distillation step against its parts')
    parser.add_argument('--config', default=KD_CONFIG, help='distillation config')
    parser.add_argument('--steps', type=int, default=10, help='timed steps per mode')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps per mode')
    parser.add_argument('--batches', type=int, default=3, help='distinct batches, reused in turn')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument(
        '--random-teacher',
        action='store_true',
        help='use a randomly initialised teacher instead of the config checkpoint (same cost)',
    )
    parser.add_argument('--out', help='also write the report as JSON to this file')
    parser.add_argument('--mode', choices=MODES, help=argparse.SUPPRESS)  # child processes only
    parser.add_argument('--teacher-checkpoint', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batches < 1:
        raise SystemExit(
            f'--steps must be >= 1, --warmup >= 0 and --batches >= 1; got {args.steps}, '
            f'{args.warmup}, {args.batches}'
        )
    return args


def _build(args: argparse.Namespace):
    """Return the model of ``args.mode``, its optim wrapper and preprocessed batches."""
    import torch
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.runner import Runner

    import kd_plugin  # noqa: F401
    from kd_plugin.models import build_detector

    torch.manual_seed(0)
    cfg = Config.fromfile(args.config)
    if args.teacher_checkpoint:
        cfg.model.teacher.checkpoint = args.teacher_checkpoint
    DefaultScope.get_instance('kd_plugin_benchmark', scope_name=cfg.get('default_scope', 'mmyolo'))
    if args.mode == 'student':
        # Student-only training has no teacher, so its memory is measured without one.
        model = build_detector(cfg.model.student)
    else:
        model = MODELS.build(cfg.model)
    model = model.to(args.device).train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)

    loader_cfg = cfg.train_dataloader
    loader_cfg.num_workers, loader_cfg.persistent_workers = 0, False
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    batches = []
    for batch in loader:
        batches.append(model.data_preprocessor(batch, True))
        if len(batches) == args.batches:
            break
    return model, optim_wrapper, batches


def _synchronize(device: str) -> None:
    import torch

    if device.startswith('cuda'):
        torch.cuda.synchronize()


def run_child(args: argparse.Namespace) -> Dict:
    """Time ``args.mode`` steps in this process and return the seconds and peak memory."""
    import torch

    model, optim_wrapper, batches = _build(args)

    def step(batch):
        if args.mode == 'teacher':
            with torch.no_grad():
                model.teacher(batch['inputs'], batch['data_samples'], mode='tensor')
            return
        losses = model(**batch, mode='loss')
        loss, _ = model.parse_losses(losses)
        optim_wrapper.update_params(loss)

    if args.device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for index in range(args.warmup + args.steps):
        batch = batches[index % len(batches)]
        _synchronize(args.device)
        start = time.perf_counter()
        step(batch)
        _synchronize(args.device)
        if index >= args.warmup:
            times.append(time.perf_counter() - start)

    if args.device.startswith('cuda'):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return dict(mode=args.mode, median_s=statistics.median(times), times_s=times, peak_mb=peak_mb)


def _random_teacher_checkpoint(config: str, folder: str) -> str:
    import torch
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import kd_plugin  # noqa: F401
    from kd_plugin.models import build_detector

    cfg = Config.fromfile(config)
    DefaultScope.get_instance('kd_plugin_teacher', scope_name=cfg.get('default_scope', 'mmyolo'))
    teacher = build_detector(cfg.model.teacher.config)
    path = osp.join(folder, 'random_teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, path)
    return path


def main(argv: Optional[List[str]] = None) -> Dict:
    args = parse_args(argv)
    if args.mode:
        print(json.dumps(run_child(args)))
        return {}

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        teacher_checkpoint = None
        if args.random_teacher:
            teacher_checkpoint = _random_teacher_checkpoint(args.config, folder)
        for mode in MODES:
            command = [
                sys.executable,
                sys.argv[0] if argv is None else 'tools/benchmark_distill.py',
                '--config', args.config, '--steps', str(args.steps),
                '--warmup', str(args.warmup), '--batches', str(args.batches),
                '--device', args.device, '--mode', mode,
            ]  # fmt: skip
            if teacher_checkpoint:
                command += ['--teacher-checkpoint', teacher_checkpoint]
            print(f'timing {mode} steps ...', flush=True)
            completed = subprocess.run(command, capture_output=True, text=True, env=os.environ)
            if completed.returncode != 0:
                raise SystemExit(f'{mode} benchmark failed:\n{completed.stderr[-3000:]}')
            results[mode] = json.loads(completed.stdout.strip().splitlines()[-1])

    student, teacher, distill = (results[mode]['median_s'] for mode in MODES)
    report = dict(
        config=args.config,
        device=args.device,
        steps=args.steps,
        student_step_s=student,
        teacher_forward_s=teacher,
        distill_step_s=distill,
        time_ratio=distill / (student + teacher),
        student_peak_mb=results['student']['peak_mb'],
        distill_peak_mb=results['distill']['peak_mb'],
        memory_ratio=results['distill']['peak_mb'] / results['student']['peak_mb'],
    )
    print(
        f'\nmedian of {args.steps} steps on {args.device}: student train step {student:.3f} s, '
        f'teacher forward {teacher:.3f} s, distillation step {distill:.3f} s\n'
        f'distillation step / (student step + teacher forward) = {report["time_ratio"]:.3f}\n'
        f'peak memory: student-only {report["student_peak_mb"]:.0f} MB, distillation '
        f'{report["distill_peak_mb"]:.0f} MB, ratio {report["memory_ratio"]:.3f}'
    )
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=2)
    return report
