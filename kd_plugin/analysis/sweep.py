"""Run a planned temperature sweep (see sweep_plan) and resume it after an interruption.

A run is finished when its work dir contains ``sweep_done.json``, which the sweep writes only
after tools/train.py exited with 0 and the last epoch's validation result is logged. Any other
run is trained again: resumed from the checkpoint that MMEngine's ``last_checkpoint`` file
names, which CheckpointHook updates only after the checkpoint is completely written, or from
scratch when there is none.
"""

import json
import os
import os.path as osp
import re
import shlex
import subprocess
import time
from typing import Callable, Dict, List, Optional, Sequence

from mmengine.logging import print_log

from .logs import METRIC_KEYS, read_scalars
from .sweep_plan import (
    TOOLS_DIR,
    SweepRun,
    TeacherEval,
    evaluation_command,
    expected_final_epoch,
    train_command,
)

DONE_MARKER = 'sweep_done.json'
RUN_SETTINGS = 'sweep_run.json'
FINAL_EVAL_METRICS = 'final_eval_metrics.json'

# Runs a command with its output appended to a log file and returns the exit code.
Executor = Callable[[List[str], str], int]
Logger = Callable[[str], None]


def log_current(message: str) -> None:
    print_log(message, logger='current')


def run_logged(command: List[str], log_file: str) -> int:
    """Run a command, appending its output to ``log_file`` and echoing progress lines.

    Echoed are training iterations, validation results and errors. If this process is
    interrupted (KeyboardInterrupt, or any other exception while reading), the child is
    terminated too, so that no orphaned training keeps writing into the work dir.

    Returns:
        The exit code.
    """
    os.makedirs(osp.dirname(osp.abspath(log_file)), exist_ok=True)
    with open(log_file, 'a') as log:
        log.write(f'\n$ {shlex.join(command)}\n')
        log.flush()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        try:
            for line in process.stdout:
                log.write(line)
                if 'Epoch(train)' in line or 'coco/bbox_mAP:' in line:
                    start = max(line.find('Epoch('), 0)  # after MMEngine's time and level
                    print('    ' + line[start:].rstrip()[:200], flush=True)
                elif 'Error' in line or 'error:' in line:
                    print('    ' + line.rstrip(), flush=True)
        except BaseException:
            process.terminate()
            process.wait(timeout=60)
            raise
        return process.wait()


def read_json(path: str) -> Optional[dict]:
    """Return the JSON object in ``path``, or None if the file does not exist."""
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_json(path: str, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file, so that no reader sees half of it."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    temporary = path + '.tmp'
    with open(temporary, 'w') as f:
        json.dump(data, f, indent=2)
    os.replace(temporary, path)


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """Return the checkpoint that ``<work_dir>/last_checkpoint`` names, if that file exists."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        checkpoint = f.read().strip()
    return checkpoint if checkpoint and osp.isfile(checkpoint) else None


def checkpoint_epoch(checkpoint: str) -> Optional[int]:
    """Return N of an ``epoch_N.pth`` checkpoint name, None for other names."""
    match = re.fullmatch(r'epoch_(\d+)\.pth', osp.basename(checkpoint))
    return int(match.group(1)) if match else None


def run_settings(run: SweepRun) -> dict:
    """Return what must match for a work dir to continue a run: config and overrides."""
    return dict(config=osp.abspath(run.config), cfg_options=run.cfg_options)


def check_run_settings(run: SweepRun) -> None:
    """Raise ValueError if the run's work dir was started with another config or overrides."""
    for file_name in (DONE_MARKER, RUN_SETTINGS):
        recorded = read_json(osp.join(run.work_dir, file_name))
        if recorded is None:
            continue
        expected = run_settings(run)
        found = {key: recorded.get(key) for key in expected}
        if found != expected:
            raise ValueError(
                f'{run.work_dir} was started with {found}, but this sweep runs {expected}; '
                'pass another --work-dir, or delete that folder to train it again'
            )


def file_state(path: str) -> dict:
    """Return a file's absolute path, size and modification time, to notice a replaced file."""
    stat = os.stat(path)
    return dict(path=osp.abspath(path), size=stat.st_size, mtime=stat.st_mtime)


def teacher_is_evaluated(teacher: TeacherEval) -> bool:
    """Return whether the teacher's done marker describes the current checkpoint file."""
    marker = read_json(osp.join(teacher.work_dir, DONE_MARKER))
    if marker is None or not osp.isfile(teacher.checkpoint):
        return False
    return marker == file_state(teacher.checkpoint)


def evaluate_teacher(
    teacher: TeacherEval, dry_run: bool, execute: Executor, log: Logger
) -> Optional[List[str]]:
    """Evaluate the teacher unless its marker matches the current checkpoint file.

    Returns:
        The tools/test.py command that ran, or would run in a dry run; None when skipped.
    """
    if teacher_is_evaluated(teacher):
        log(f'teacher: {teacher.checkpoint} evaluated before, see {teacher.metrics_file}')
        return None
    command = teacher.command()
    if dry_run:
        if not osp.isfile(teacher.checkpoint):
            log(f'teacher: checkpoint {teacher.checkpoint} not found yet')
        log(f'teacher evaluation:\n  {shlex.join(command)}')
        return command
    if not osp.isfile(teacher.checkpoint):
        raise FileNotFoundError(
            f'teacher checkpoint not found: {teacher.checkpoint!r}; train it first (for BCCD: '
            '`make teacher`), pass --teacher-checkpoint, or leave out --eval-teacher'
        )

    log(f'teacher evaluation: {shlex.join(command)}')
    log_file = osp.join(teacher.work_dir, 'sweep_test.log')
    returncode = execute(command, log_file)
    if returncode != 0 or not osp.isfile(teacher.metrics_file):
        raise RuntimeError(f'teacher evaluation failed with exit code {returncode}; see {log_file}')
    write_json(osp.join(teacher.work_dir, DONE_MARKER), file_state(teacher.checkpoint))
    return command


def train_run(run: SweepRun, command: List[str], execute: Executor, log: Logger) -> dict:
    """Train one run to the end, check its final validation and write its done marker.

    The training time of every attempt is added up in ``sweep_run.json``, also when an
    attempt is interrupted by an exception such as KeyboardInterrupt.

    Returns:
        The done marker's content.

    Raises:
        RuntimeError: if tools/train.py (or the evaluation that replaces a missing final
            validation) exits with a non-zero code.
    """
    settings_file = osp.join(run.work_dir, RUN_SETTINGS)
    settings = read_json(settings_file) or dict(run_settings(run), train_seconds=0.0)
    write_json(settings_file, settings)
    log_file = osp.join(run.work_dir, 'sweep_train.log')
    start = time.monotonic()
    try:
        returncode = execute(command, log_file)
    finally:
        settings['train_seconds'] += time.monotonic() - start
        write_json(settings_file, settings)
    if returncode != 0:
        raise RuntimeError(
            f'{run.name}: training failed with exit code {returncode}; see {log_file}. Fix the '
            'cause and rerun the sweep, which resumes this run from its last checkpoint'
        )

    marker = dict(
        run_settings(run),
        role=run.role,
        temperature=run.temperature,
        seed=run.seed,
        train_seconds=settings['train_seconds'],
        finished_at=time.strftime('%Y-%m-%d %H:%M:%S'),
        final_eval=evaluate_missing_final_epoch(run, execute, log),
    )
    write_json(osp.join(run.work_dir, DONE_MARKER), marker)
    return marker


def evaluate_missing_final_epoch(run: SweepRun, execute: Executor, log: Logger) -> Optional[dict]:
    """Evaluate the final checkpoint with tools/test.py when its validation was not logged.

    That happens when a run was stopped during the last epoch's validation: resumed from the
    final checkpoint, tools/train.py has no epoch left to train and exits with 0 without
    validating.

    Returns:
        None when the final epoch's validation is logged, else a dict with ``checkpoint``,
        ``epoch`` and ``metrics_file`` (relative to the run's work dir).
    """
    final_epoch = expected_final_epoch(run.config, run.cfg_options)
    val = read_scalars(run.work_dir)['val']
    last_epoch = val[-1]['step'] if val else None
    if final_epoch is None or last_epoch == final_epoch:
        return None
    checkpoint = latest_checkpoint(run.work_dir)
    if checkpoint is None or checkpoint_epoch(checkpoint) != final_epoch:
        raise RuntimeError(
            f'{run.name}: training exited with 0, but the last validation result is of epoch '
            f'{last_epoch} and the latest checkpoint {checkpoint} is not of the final epoch '
            f'{final_epoch}; see {osp.join(run.work_dir, "sweep_train.log")}'
        )

    log(f'  no validation result of epoch {final_epoch} logged; evaluating {checkpoint}')
    command = evaluation_command(
        run.config,
        checkpoint,
        osp.join(run.work_dir, 'final_eval'),
        osp.join(run.work_dir, FINAL_EVAL_METRICS),
        run.cfg_options,
    )
    log_file = osp.join(run.work_dir, 'sweep_test.log')
    returncode = execute(command, log_file)
    if returncode != 0 or not osp.isfile(osp.join(run.work_dir, FINAL_EVAL_METRICS)):
        raise RuntimeError(
            f'{run.name}: evaluation of {checkpoint} failed with exit code {returncode}; '
            f'see {log_file}'
        )
    if METRIC_KEYS[0] not in read_json(osp.join(run.work_dir, FINAL_EVAL_METRICS)):
        raise RuntimeError(
            f'{run.name}: the evaluation of {checkpoint} returned no {METRIC_KEYS[0]}, as MMDet '
            f'does when the model detects nothing; see {log_file}'
        )
    return dict(checkpoint=checkpoint, epoch=final_epoch, metrics_file=FINAL_EVAL_METRICS)


def estimate_seconds_left(
    runs_left: Sequence[SweepRun], durations: Dict[str, List[float]]
) -> Optional[float]:
    """Estimate the training time of ``runs_left`` from finished runs' durations.

    A run counts the mean duration of finished runs of its role, or of all finished runs
    when none of its role has finished. A resumed run counts in full, so the estimate is high
    while one is being resumed.

    Returns:
        Seconds, or None when no run has finished yet.
    """
    all_durations = [seconds for role in durations.values() for seconds in role]
    if not all_durations:
        return None
    total = 0.0
    for run in runs_left:
        same_role = durations.get(run.role) or all_durations
        total += sum(same_role) / len(same_role)
    return total


def format_duration(seconds: Optional[float]) -> str:
    """Format seconds as H:MM:SS, None as 'unknown'."""
    if seconds is None:
        return 'unknown'
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f'{minutes // 60}:{minutes % 60:02d}:{seconds:02d}'


def run_sweep(
    runs: Sequence[SweepRun],
    gpus: int = 1,
    dry_run: bool = False,
    teacher: Optional[TeacherEval] = None,
    execute: Executor = run_logged,
    log: Logger = log_current,
) -> List[List[str]]:
    """Evaluate the teacher if given, then train every run that is not finished, in order.

    Progress lines name the run (i/n), the time since the sweep started and an estimate of
    the time left. In a dry run nothing is written or started, and the commands that would
    run are logged.

    Returns:
        The commands that ran, or would run in a dry run.

    Raises:
        ValueError: if a run's work dir was started with another config or overrides.
        FileNotFoundError: if gpus > 1 and tools/dist_train.sh is missing, outside a dry run.
        RuntimeError: at the first run that fails. The runs after it are not started.
    """
    for run in runs:
        check_run_settings(run)
    if gpus > 1 and not osp.isfile(osp.join(TOOLS_DIR, 'dist_train.sh')):
        message = (
            f'{osp.join(TOOLS_DIR, "dist_train.sh")} not found; it is needed for --gpus {gpus}'
        )
        if not dry_run:
            raise FileNotFoundError(message)
        log(f'NOTE: {message}')

    commands = []
    if teacher is not None:
        command = evaluate_teacher(teacher, dry_run, execute, log)
        commands += [command] if command else []

    # Durations of runs finished before, for the estimate of the time left.
    markers = {run.name: read_json(osp.join(run.work_dir, DONE_MARKER)) for run in runs}
    durations: Dict[str, List[float]] = {}
    for run in runs:
        if markers[run.name] is not None:
            durations.setdefault(run.role, []).append(markers[run.name]['train_seconds'])

    start = time.monotonic()
    for index, run in enumerate(runs):
        prefix = f'[{index + 1}/{len(runs)}] {run.label}'
        if markers[run.name] is not None:
            log(f'{prefix}: finished before, skipped ({run.work_dir})')
            continue

        resume_from = latest_checkpoint(run.work_dir)
        command = train_command(run, gpus, resume_from)
        commands.append(command)
        if dry_run:
            state = f'would resume from {resume_from}' if resume_from else 'would start'
        else:
            state = f'resuming from {resume_from}' if resume_from else 'starting'
        if dry_run:
            log(f'{prefix}, {state}:\n  {shlex.join(command)}')
            continue

        runs_left = [other for other in runs[index:] if markers[other.name] is None]
        elapsed = time.monotonic() - start
        left = estimate_seconds_left(runs_left, durations)
        log(
            f'{prefix}, {state}: elapsed {format_duration(elapsed)}, '
            f'estimated time left {format_duration(left)}\n  {shlex.join(command)}'
        )
        markers[run.name] = train_run(run, command, execute, log)
        durations.setdefault(run.role, []).append(markers[run.name]['train_seconds'])
        log(f'{prefix}: done in {format_duration(markers[run.name]["train_seconds"])}')
    if not dry_run:
        log(f'sweep of {len(runs)} runs done in {format_duration(time.monotonic() - start)}')
    return commands
