"""Write the student of a kd_plugin distillation checkpoint as a plain detector checkpoint.

Usage:
    python tools/convert_kd_ckpt_to_student.py work_dirs/kd/epoch_20.pth student.pth

The output loads in plain MMYOLO/MMDetection (tools/test.py, init_detector) without kd_plugin.
Training with StudentExportHook already writes <checkpoint>_student.pth files after training.
"""

import argparse
import os

from kd_plugin.utils import export_student_checkpoint


def main():
    parser = argparse.ArgumentParser(description='Extract the student of a distillation checkpoint')
    parser.add_argument('checkpoint', help='distillation checkpoint (.pth) written by training')
    parser.add_argument('output', help='where to write the student checkpoint (.pth)')
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='unpickle any object in the input; only for files from a trusted source',
    )
    parser.add_argument('--force', action='store_true', help='overwrite an existing output file')
    args = parser.parse_args()
    if os.path.exists(args.output) and os.path.samefile(args.output, args.checkpoint):
        raise SystemExit(f'output {args.output!r} is the input checkpoint; choose another path')
    if os.path.exists(args.output) and not args.force:
        raise SystemExit(f'output {args.output!r} exists; pass --force to overwrite it')
    export_student_checkpoint(args.checkpoint, args.output, trusted=args.trust_checkpoint)


if __name__ == '__main__':
    main()
