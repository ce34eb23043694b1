"""Benchmark MultistepSGD against torch.optim.SGD on the same student training.

Usage:
    python tools/benchmark_optimizer.py CONFIG [--alphas 0.25 0.5] [--seeds 0 1 2]
        [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--dry-run | --collect-only]

Each seed trains CONFIG with its own optimizer and with MultistepSGD at each alpha, through
tools/train.py, each run in DIR/<run name>. Rerunning the command skips finished runs and
resumes the others. DIR receives summary.csv, summary.md (final mAP mean ± std, step-time and
iteration-time ratios), step_time.json and curves/ (losses.png, accuracy.png of the first seed).
"""

from kd_plugin.analysis.optimizer_benchmark import main

if __name__ == '__main__':
    main()
