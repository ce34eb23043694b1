"""Evaluate a checkpoint on a config's test set, as MMYOLO's tools/test.py does.

Usage:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--trust-checkpoint]

Run it from the repository root, where the BCCD configs find data/bccd/.
"""

from kd_plugin.apis.test import main

if __name__ == '__main__':
    main()
