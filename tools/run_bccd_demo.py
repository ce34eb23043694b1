"""The main job: distill the shipped BCCD teacher (YOLOv5-s) into YOLOv5-n on the CPU.

Usage (from the repository root, inside the environment `make env` creates):
    python tools/run_bccd_demo.py [--work-dir work_dirs/bccd_demo] [--baseline recorded|train]

It evaluates the teacher, trains the distilled student, prints a table with the baseline
student, and leaves logs, curves and student-only checkpoints in the work dir.
"""

from kd_plugin.apis.bccd_demo import main

if __name__ == '__main__':
    main()
