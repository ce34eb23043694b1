"""Train a detector, with or without distillation, as MMYOLO's tools/train.py does.

Usage:
    python tools/train.py CONFIG [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--amp] [--resume [CKPT]] [--trust-checkpoint]

Run it from the repository root, where the BCCD configs find data/bccd/.
"""

from kd_plugin.apis.train import main

if __name__ == '__main__':
    main()
