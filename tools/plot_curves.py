"""Plot validation accuracy per epoch and each loss term per iteration of tools/train.py runs.

Usage:
    python tools/plot_curves.py WORK_DIR [WORK_DIR ...] [--labels LABEL ...] [--out-dir DIR]
        [--window POINTS]

Writes DIR/accuracy.png and DIR/losses.png, with the runs overlaid; DIR defaults to
<common parent of the work dirs>/curves.
"""

from kd_plugin.analysis.cli import plot_curves_main

if __name__ == '__main__':
    plot_curves_main()
