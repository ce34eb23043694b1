"""Helpers of the distributed tests: a loopback port, the tools/dist_*.sh runner and a config.

The runs use gloo on this machine's loopback interface only, two processes with one thread
each, the first 8 training and 4 validation images of BCCD, and tiny YOLOv5 models.
"""

import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import time
from typing import List, Optional

import torch
from mmengine.config import Config

from tests.conftest import (
    REPO_ROOT,
    TINY_STUDENT_WIDEN,
    TINY_TEACHER_WIDEN,
    bccd_config,
    use_bccd_subset,
    yolov5_model_cfg,
)

NUM_PROCS = 2
BATCH_SIZE_PER_PROC = 2  # 8 images / (2 processes x 2 images) = 2 iterations per epoch
# Seconds a launch may take before it is killed. Launches took 35 to 50 s on 2 shared cores.
LAUNCH_TIMEOUT = 400
# Seconds a collective operation may wait for the other rank before the run fails.
COLLECTIVE_TIMEOUT = 240


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def launcher_env() -> dict:
    """Environment of a tools/dist_*.sh run on this machine's loopback interface."""
    env = dict(os.environ)
    for name in ('NNODES', 'NODE_RANK', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        env.pop(name, None)
    env.update(
        PYTHON=sys.executable,
        MASTER_ADDR='127.0.0.1',
        PORT=str(free_loopback_port()),
        GLOO_SOCKET_IFNAME='lo',
        OMP_NUM_THREADS='1',
        MKL_NUM_THREADS='1',
        CUDA_VISIBLE_DEVICES='',
    )
    return env


class LaunchResult:
    """Exit code, combined output and duration in seconds of one launch."""

    def __init__(self, returncode: int, output: str, seconds: float):
        self.returncode = returncode
        self.output = output
        self.seconds = seconds

    def tail(self, num_chars: int = 6000) -> str:
        return self.output[-num_chars:]


def run_launcher(args: List[str], log_file: str, timeout: float = LAUNCH_TIMEOUT) -> LaunchResult:
    """Run a tools/ launcher script from the repository root and wait for it.

    The script runs in a new session so that, on timeout, its whole process group (torchrun
    and both training processes) is killed.
    """
    start = time.time()
    with open(log_file, 'w') as log:
        process = subprocess.Popen(
            ['bash', *args],
            cwd=REPO_ROOT,
            env=launcher_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            returncode = -signal.SIGKILL
    with open(log_file) as log:
        output = log.read()
    return LaunchResult(returncode, output, time.time() - start)


def dist_kd_config(
    subset: dict,
    teacher_checkpoint: str,
    work_dir: str,
    max_epochs: int,
    stop_epoch: Optional[int] = None,
    validate: bool = True,
) -> Config:
    """The BCCD distillation config with tiny models, the BCCD subset and the probe hook.

    Besides the three YOLOv5 head losses it has ``loss_kd_probe``, whose learnable scale is a
    trainable parameter outside the student. A checkpoint follows every epoch, and so does
    validation unless ``validate`` is False.
    """
    cfg = bccd_config('kd_yolov5_s-to-n_320_20e_bccd.py')
    cfg.custom_imports = dict(imports=['kd_plugin', 'tests.distributed.probe'])
    cfg.model.student = yolov5_model_cfg(TINY_STUDENT_WIDEN)
    cfg.model.teacher = dict(
        config=yolov5_model_cfg(TINY_TEACHER_WIDEN), checkpoint=teacher_checkpoint
    )
    cfg.model.distill_losses.loss_kd_probe = dict(type='ProbeScaledClsDistillLoss')

    use_bccd_subset(cfg, subset, batch_size=BATCH_SIZE_PER_PROC)
    cfg.val_dataloader.batch_size = BATCH_SIZE_PER_PROC
    cfg.optim_wrapper.optimizer.batch_size_per_gpu = BATCH_SIZE_PER_PROC

    cfg.train_cfg.max_epochs = max_epochs
    cfg.train_cfg.val_interval = 1 if validate else max_epochs + 1
    cfg.default_hooks.param_scheduler.max_epochs = 2
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best=None
    )
    cfg.default_hooks.logger.interval = 1
    cfg.custom_hooks = [
        hook for hook in cfg.custom_hooks if hook.type != 'kd_plugin.DistillScheduleHook'
    ]
    cfg.custom_hooks += [
        dict(type='kd_plugin.DistillScheduleHook', stop_epoch=stop_epoch),
        dict(type='kd_plugin.DistributedProbeHook'),
    ]
    cfg.env_cfg.dist_cfg = dict(backend='gloo', timeout=COLLECTIVE_TIMEOUT)
    cfg.work_dir = work_dir
    return cfg


def load_probes(work_dir: str) -> List[dict]:
    """Return the probe records of rank 0 and rank 1 of a finished run, in rank order."""
    paths = [osp.join(work_dir, 'probe', f'rank{rank}.pth') for rank in range(NUM_PROCS)]
    return [torch.load(path, map_location='cpu', weights_only=False) for path in paths]
