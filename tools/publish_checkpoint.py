"""Slim the best (or else the latest) checkpoint of a training run into a file to ship.

Usage:
    python tools/publish_checkpoint.py WORK_DIR OUTPUT.pth [--full-precision]

The output keeps the model weights (EMA-averaged when training used EMA) and the dataset
metadata, stored as float16 unless --full-precision is given, and drops optimizer and log state.
"""

import argparse
import os

from kd_plugin.hooks import find_checkpoints
from kd_plugin.utils import slim_checkpoint


def main():
    parser = argparse.ArgumentParser(description='Slim a training checkpoint for shipping')
    parser.add_argument('work_dir', help='work dir of the finished training run')
    parser.add_argument('output', help='where to write the slim checkpoint')
    parser.add_argument('--full-precision', action='store_true', help='keep float32 weights')
    args = parser.parse_args()

    checkpoints = find_checkpoints(args.work_dir)
    if not checkpoints:
        raise SystemExit(f'no checkpoint found in {args.work_dir}; train into it first')
    best = [path for path in checkpoints if os.path.basename(path).startswith('best_')]
    source = best[-1] if best else checkpoints[0]
    slim_checkpoint(source, args.output, half=not args.full_precision)
    print(f'{source} -> {args.output}')


if __name__ == '__main__':
    main()
