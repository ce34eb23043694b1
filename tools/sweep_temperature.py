"""Sweep the distillation temperature: baseline and distilled students over seeds, then compare.

Usage:
    python tools/sweep_temperature.py KD_CONFIG [--baseline-config CONFIG]
        [--temperatures 1 2 4 8 16] [--seeds 0 1] [--work-dir DIR] [--eval-teacher]
        [--cfg-options KEY=VALUE ...] [--gpus N] [--dry-run | --collect-only]

Each run is a tools/train.py run in DIR/<run name> with `--cfg-options model.temperature=T
randomness.seed=S`. Rerunning the same command skips finished runs and resumes the others.
DIR receives runs.csv, summary.csv, summary.md and temperature_sweep.png. Run it from the
repository root, where the BCCD configs find data/bccd/.
"""

from kd_plugin.analysis.cli import sweep_main

if __name__ == '__main__':
    sweep_main()
