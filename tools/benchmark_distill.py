"""Time a distillation train step against a student train step plus a teacher forward.

Usage:
    python tools/benchmark_distill.py [--steps 10] [--device cpu] [--random-teacher] [--out F.json]

Prints the ratio distillation step / (student step + teacher forward) and the peak memory of
distillation over student-only training, measured in one run on the BCCD configs.
"""

from kd_plugin.apis.benchmark import main

if __name__ == '__main__':
    main()
