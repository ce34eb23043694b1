#!/usr/bin/env bash
# Evaluate a checkpoint with several processes on one or more machines: torchrun starts
# tools/test.py with MMEngine's pytorch launcher (--launcher pytorch) in every process, and each
# process evaluates its share of the test set.
#
# Usage (from the repository root):
#   tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [--nnodes N] [--node-rank R]
#                      [--master-addr HOST] [--master-port PORT] [tools/test.py options ...]
#
# NUM_PROCS is the number of processes on this machine, one per GPU. On a machine without CUDA
# every process runs on the CPU and the processes talk over gloo. The launcher options default
# to these environment variables:
#   NNODES                number of machines (default 1)
#   NODE_RANK             index of this machine, 0 .. NNODES-1 (default 0)
#   MASTER_ADDR           address of machine 0 (default 127.0.0.1; required when NNODES > 1)
#   PORT or MASTER_PORT   free TCP port on machine 0 (default 29500)
#   PYTHON                interpreter (default python)
#
# Example:
#   tools/dist_test.sh configs/yolov5/bccd/yolov5_n_320_20e_bccd.py student.pth 8 --metrics-out m.json
set -euo pipefail

usage="usage: $0 CONFIG CHECKPOINT NUM_PROCS [--nnodes N] [--node-rank R] [--master-addr HOST] [--master-port PORT] [test.py options]"
if [[ $# -lt 3 ]]; then
    echo "$usage" >&2
    exit 2
fi
exec bash "$(dirname "$0")/torchrun_launch.sh" test.py "$3" 2 "$usage" "$1" "$2" "${@:4}"
