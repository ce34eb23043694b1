"""The BCCD main job: distill the shipped YOLOv5-s teacher into YOLOv5-n and compare.

Each training or evaluation step runs the project's own ``tools/train.py`` or ``tools/test.py``
in a child process, printing the exact command, so that every number in the final table can be
reproduced by hand.
"""

import argparse
import json
import os
import os.path as osp
import shlex
import subprocess
import sys
import time
from typing import Dict, List, Optional

from ..analysis import final_metrics, plot_accuracy, plot_losses

CONFIG_DIR = 'configs/yolov5/bccd'
TEACHER_CONFIG = f'{CONFIG_DIR}/yolov5_s_320_30e_bccd.py'
TEACHER_CHECKPOINT = 'checkpoints/bccd/yolov5_s_320_30e_bccd.pth'
STUDENT_CONFIG = f'{CONFIG_DIR}/yolov5_n_320_20e_bccd.py'
KD_CONFIG = f'{CONFIG_DIR}/kd_yolov5_s-to-n_320_20e_bccd.py'
RECORDED_BASELINE = 'docs/results/bccd_yolov5_n_320_20e_baseline.json'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Distill YOLOv5-s into YOLOv5-n on BCCD and compare with the baseline'
    )
    parser.add_argument('--work-dir', default='work_dirs/bccd_demo', help='output folder')
    parser.add_argument(
        '--baseline',
        choices=['recorded', 'train'],
        default='recorded',
        help=f'use the baseline student recorded in {RECORDED_BASELINE} (default), or train '
        'it now (6.5 more minutes on 2 idle cores)',
    )
    parser.add_argument(
        '--train-teacher',
        action='store_true',
        help=f'train the teacher (about an hour on 2 cores) when {TEACHER_CHECKPOINT} is missing',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        help='extra overrides for the distillation run, e.g. model.temperature=8',
    )
    return parser.parse_args(argv)


def run_tool(args: List[str], log_file: str) -> None:
    """Run a tools/ script in a child process, streaming its output to the console and a log."""
    command = [sys.executable, *args]
    print(f'\n$ {shlex.join(command)}\n  (log: {log_file})', flush=True)
    os.makedirs(osp.dirname(log_file), exist_ok=True)
    start = time.time()
    with open(log_file, 'w', buffering=1) as log:  # line-buffered, so the log can be followed
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        for line in process.stdout:
            log.write(line)
            # Show progress (iteration, validation and error lines), not every warning, without
            # MMEngine's "date time - mmengine - INFO - " prefix.
            if any(word in line for word in ('Epoch(', 'coco/bbox_mAP', 'Error', 'error:')):
                print('  ' + line.rstrip().split(' - INFO - ')[-1][:200], flush=True)
        returncode = process.wait()
    if returncode != 0:
        raise SystemExit(f'{args[0]} failed with exit code {returncode}; see {log_file}')
    print(f'  done in {(time.time() - start) / 60:.1f} min', flush=True)


def evaluate(config: str, checkpoint: str, work_dir: str) -> dict:
    metrics_file = osp.join(work_dir, 'metrics.json')
    run_tool(
        [
            'tools/test.py',
            config,
            checkpoint,
            '--work-dir',
            work_dir,
            '--metrics-out',
            metrics_file,
        ],
        osp.join(work_dir, 'test.log'),
    )
    with open(metrics_file) as f:
        metrics = json.load(f)
    return {
        'mAP': metrics['coco/bbox_mAP'],
        'mAP50': metrics['coco/bbox_mAP_50'],
        'mAP75': metrics['coco/bbox_mAP_75'],
    }


def finished_metrics(config: str, work_dir: str) -> Optional[dict]:
    """Return the final metrics of a run in ``work_dir`` that validated its last epoch."""
    from mmengine.config import Config

    metrics = final_metrics(work_dir) if osp.isdir(work_dir) else None
    if metrics and metrics.get('epoch') == Config.fromfile(config).train_cfg.max_epochs:
        return metrics
    return None


def train(config: str, work_dir: str, cfg_options: List[str]) -> dict:
    # Rerunning the job reuses finished runs, e.g. to print the table again after a crash later
    # on. A run with overrides is always trained, since its work dir may hold another setting.
    metrics = None if cfg_options else finished_metrics(config, work_dir)
    if metrics is not None:
        print(f'  {work_dir} already finished {metrics["epoch"]} epochs: reusing it', flush=True)
        return metrics

    command = ['tools/train.py', config, '--work-dir', work_dir]
    if cfg_options:
        command += ['--cfg-options', *cfg_options]
    run_tool(command, osp.join(work_dir, 'train.log'))
    metrics = final_metrics(work_dir)
    if metrics is None:
        raise SystemExit(f'no validation result was logged in {work_dir}')
    return metrics


def format_table(rows: List[Dict]) -> str:
    lines = [
        '| model | role | mAP50-95 | mAP50 | mAP75 | source |',
        '|---|---|---|---|---|---|',
    ]
    for row in rows:
        values = ' | '.join(
            '-' if row[key] is None else f'{row[key]:.3f}' for key in ('mAP', 'mAP50', 'mAP75')
        )
        lines.append(f'| {row["model"]} | {row["role"]} | {values} | {row["source"]} |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    work_dir = args.work_dir
    started = time.time()

    print('[1/4] teacher', flush=True)
    if not osp.isfile(TEACHER_CHECKPOINT):
        if not args.train_teacher:
            raise SystemExit(
                f'teacher checkpoint {TEACHER_CHECKPOINT} not found; restore it from git, or '
                'train it with --train-teacher (or `make teacher`)'
            )
        train(TEACHER_CONFIG, osp.join(work_dir, 'teacher'), [])
        run_tool(
            ['tools/publish_checkpoint.py', osp.join(work_dir, 'teacher'), TEACHER_CHECKPOINT],
            osp.join(work_dir, 'teacher', 'publish.log'),
        )
    teacher = evaluate(TEACHER_CONFIG, TEACHER_CHECKPOINT, osp.join(work_dir, 'teacher_eval'))

    print('[2/4] distilled student (YOLOv5-n, teacher YOLOv5-s)', flush=True)
    kd_dir = osp.join(work_dir, 'kd_student')
    distilled = train(KD_CONFIG, kd_dir, args.cfg_options)

    print('[3/4] baseline student (YOLOv5-n alone)', flush=True)
    runs = {'distilled YOLOv5-n': kd_dir}
    if args.baseline == 'train':
        baseline_dir = osp.join(work_dir, 'baseline_student')
        baseline = train(STUDENT_CONFIG, baseline_dir, [])
        baseline_source = 'trained in this run'
        runs['baseline YOLOv5-n'] = baseline_dir
        # The record that --baseline recorded reads, once copied to RECORDED_BASELINE.
        record = dict(
            command=f'python tools/train.py {STUDENT_CONFIG} --work-dir {baseline_dir}',
            config=STUDENT_CONFIG,
            date=time.strftime('%Y-%m-%d'),
            metrics=baseline,
        )
        with open(osp.join(work_dir, 'baseline_record.json'), 'w') as f:
            json.dump(record, f, indent=2)
    elif osp.isfile(RECORDED_BASELINE):
        with open(RECORDED_BASELINE) as f:
            recorded = json.load(f)
        baseline = recorded['metrics']
        baseline_source = f'recorded ({RECORDED_BASELINE})'
        print(f'  recorded with: {recorded["command"]}', flush=True)
    else:
        baseline = None
        baseline_source = f'not recorded: {RECORDED_BASELINE} is missing, use --baseline train'
        print(f'  {baseline_source}', flush=True)

    print('[4/4] summary', flush=True)
    rows = [
        dict(
            model='YOLOv5-s', role='teacher', source='shipped checkpoint, evaluated now', **teacher
        ),
        dict(
            model='YOLOv5-n',
            role='baseline student',
            source=baseline_source,
            **(baseline or dict(mAP=None, mAP50=None, mAP75=None)),
        ),
        dict(model='YOLOv5-n', role='distilled student', source='trained in this run', **distilled),
    ]
    table = format_table(rows)
    figures = [
        plot_accuracy(runs, osp.join(work_dir, 'curves', 'accuracy.png')),
        plot_losses(runs, osp.join(work_dir, 'curves', 'losses.png')),
    ]
    with open(osp.join(work_dir, 'summary.md'), 'w') as f:
        f.write(table + '\n')
    with open(osp.join(work_dir, 'summary.json'), 'w') as f:
        json.dump(rows, f, indent=2)
    exported = sorted(p for p in os.listdir(kd_dir) if p.endswith('_student.pth'))

    print('\nBCCD validation set (87 images), COCO bbox metrics at the end of each schedule:')
    print(table)
    print(f'\nstudent-only checkpoints: {[osp.join(kd_dir, p) for p in exported]}')
    print(f'curves: {figures}')
    print(f'total time: {(time.time() - started) / 60:.1f} min')
