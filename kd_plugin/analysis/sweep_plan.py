"""Plan a distillation temperature sweep: its runs and their tools/train.py commands.

A sweep trains the baseline student once per seed and the distillation config once per
temperature and seed, each in ``<sweep work dir>/<run name>``. The runs go seed by seed, the
baseline first and then the temperatures, so that an interrupted sweep has complete seeds.
"""

import argparse
import os.path as osp
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction

TOOLS_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools')


@dataclass(frozen=True)
class SweepRun:
    """One training run of a sweep.

    Attributes:
        name: Folder name under the sweep work dir, e.g. ``kd_t4_seed0``.
        role: ``'baseline'`` or ``'distilled'``.
        config: Config file of the run.
        seed: Value of ``randomness.seed``.
        temperature: Value of ``model.temperature``; None for the baseline.
        work_dir: The run's work dir.
        extra_options: ``--cfg-options`` entries (``key=value``) that every run of the sweep
            gets after the temperature and the seed.
        description: Progress label of a run that is neither a baseline nor a distilled run,
            such as one optimizer setting of the optimizer benchmark.
    """

    name: str
    role: str
    config: str
    seed: int
    temperature: Optional[float]
    work_dir: str
    extra_options: Tuple[str, ...] = ()
    description: Optional[str] = None

    @property
    def cfg_options(self) -> List[str]:
        options = [] if self.temperature is None else [f'model.temperature={self.temperature:g}']
        return [*options, f'randomness.seed={self.seed}', *self.extra_options]

    @property
    def label(self) -> str:
        if self.description is not None:
            return f'{self.description}, seed {self.seed}'
        if self.role == 'baseline':
            return f'baseline student, seed {self.seed}'
        return f'distilled, T={self.temperature:g}, seed {self.seed}'


@dataclass(frozen=True)
class TeacherEval:
    """Evaluation of the teacher checkpoint through tools/test.py.

    Attributes:
        config: The teacher's config file; its test set must be the students' validation set.
        checkpoint: The teacher checkpoint.
        work_dir: Folder of the evaluation logs, its ``metrics.json`` and done marker.
    """

    config: str
    checkpoint: str
    work_dir: str

    @property
    def metrics_file(self) -> str:
        return osp.join(self.work_dir, 'metrics.json')

    def command(self) -> List[str]:
        return evaluation_command(self.config, self.checkpoint, self.work_dir, self.metrics_file)


def plan_sweep(
    kd_config: str,
    baseline_config: str,
    temperatures: Sequence[float],
    seeds: Sequence[int],
    work_dir: str,
    extra_options: Sequence[str] = (),
) -> List[SweepRun]:
    """List the runs of a sweep in training order (see the module docstring).

    Raises:
        ValueError: on a repeated or non-positive temperature, a repeated seed, or an extra
            option that sets the temperature or the seed, which the sweep sets per run.
        FileNotFoundError: if a config file does not exist.
    """
    for config in (kd_config, baseline_config):
        if not osp.isfile(config):
            raise FileNotFoundError(f'config not found: {config!r}')
    if not temperatures:
        raise ValueError('no temperatures given; pass e.g. --temperatures 1 2 4 8 16')
    invalid = [temperature for temperature in temperatures if not temperature > 0]
    if invalid:
        raise ValueError(f'temperatures must be > 0, got {invalid}')
    if len(set(temperatures)) != len(temperatures):
        raise ValueError(f'temperatures repeat: {list(temperatures)}; list each once')
    if not seeds:
        raise ValueError('no seeds given; pass e.g. --seeds 0 1')
    if len(set(seeds)) != len(seeds):
        raise ValueError(f'seeds repeat: {list(seeds)}; list each once')
    for option in extra_options:
        if option.split('=', 1)[0] in ('model.temperature', 'randomness.seed'):
            raise ValueError(
                f'--cfg-options {option!r} conflicts with the sweep, which sets '
                'model.temperature and randomness.seed per run; use --temperatures and --seeds'
            )

    runs = []
    extras = tuple(extra_options)
    for seed in seeds:
        name = f'baseline_seed{seed}'
        run_dir = osp.join(work_dir, name)
        runs.append(SweepRun(name, 'baseline', baseline_config, seed, None, run_dir, extras))
        for temperature in temperatures:
            name = f'kd_t{temperature:g}_seed{seed}'
            run_dir = osp.join(work_dir, name)
            runs.append(
                SweepRun(name, 'distilled', kd_config, seed, float(temperature), run_dir, extras)
            )
    return runs


def tool_path(name: str) -> str:
    """Return the path of a script in the repository's tools/ folder, relative when shorter."""
    path = osp.join(TOOLS_DIR, name)
    relative = osp.relpath(path)
    return relative if len(relative) < len(path) else path


def train_command(run: SweepRun, gpus: int = 1, resume_from: Optional[str] = None) -> List[str]:
    """Return the tools/train.py command of a run, or its tools/dist_train.sh form for gpus > 1.

    ``tools/dist_train.sh CONFIG GPUS ARGS...`` starts one tools/train.py process per GPU with
    ``--launcher pytorch``, so the config's batch size is per GPU. The command sets the script's
    PYTHON variable to this interpreter, because the script's default is ``python`` on PATH.
    """
    if gpus < 1:
        raise ValueError(f'gpus must be >= 1, got {gpus}')
    if gpus == 1:
        command = [sys.executable, tool_path('train.py'), run.config]
    else:
        launcher = ['env', f'PYTHON={sys.executable}', 'bash', tool_path('dist_train.sh')]
        command = [*launcher, run.config, str(gpus)]
    command += ['--work-dir', run.work_dir]
    if resume_from is not None:
        command += ['--resume', resume_from]
    return command + ['--cfg-options', *run.cfg_options]


def evaluation_command(
    config: str,
    checkpoint: str,
    work_dir: str,
    metrics_out: str,
    cfg_options: Sequence[str] = (),
) -> List[str]:
    """Return the tools/test.py command that evaluates a checkpoint into a metrics JSON file."""
    command = [sys.executable, tool_path('test.py'), config, checkpoint, '--work-dir', work_dir]
    command += ['--metrics-out', metrics_out]
    if cfg_options:
        command += ['--cfg-options', *cfg_options]
    return command


def parse_cfg_options(options: Sequence[str]) -> dict:
    """Parse ``key=value`` strings as tools/train.py's ``--cfg-options`` does.

    Raises:
        ValueError: if an option has no ``=``.
    """
    if not options:
        return {}
    malformed = [option for option in options if '=' not in option]
    if malformed:
        raise ValueError(f'--cfg-options need the form key=value, got {malformed}')
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(['--cfg-options', *options]).cfg_options


def expected_final_epoch(config: str, cfg_options: Sequence[str]) -> Optional[int]:
    """Return ``train_cfg.max_epochs`` of the config with the overrides, None if iteration-based."""
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(parse_cfg_options(cfg_options))
    max_epochs = cfg.get('train_cfg', {}).get('max_epochs')
    return int(max_epochs) if max_epochs is not None else None


def teacher_test_set_mismatch(
    kd_config: str, teacher_config: str, extra_options: Sequence[str] = ()
) -> str:
    """Describe how the teacher config's test set differs from the students' validation set.

    Returns:
        An empty string when both name the same ``data_root`` and ``ann_file``.
    """
    kd_cfg = Config.fromfile(kd_config)
    kd_cfg.merge_from_dict(parse_cfg_options(extra_options))
    val = kd_cfg.val_dataloader.dataset
    test = Config.fromfile(teacher_config).test_dataloader.dataset
    student_set = (val.get('data_root'), val.get('ann_file'))
    teacher_set = (test.get('data_root'), test.get('ann_file'))
    if student_set == teacher_set:
        return ''
    return f'students validate on {student_set}, the teacher config tests on {teacher_set}'
