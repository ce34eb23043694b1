#!/usr/bin/env bash
# Train with several processes on one or more machines: torchrun starts tools/train.py with
# MMEngine's pytorch launcher (--launcher pytorch) in every process.
#
# Usage (from the repository root):
#   tools/dist_train.sh CONFIG NUM_PROCS [--nnodes N] [--node-rank R] [--master-addr HOST]
#                       [--master-port PORT] [tools/train.py options ...]
#
# NUM_PROCS is the number of processes on this machine, one per GPU. On a machine without CUDA
# every process trains on the CPU and the processes talk over gloo. The launcher options default
# to these environment variables:
#   NNODES                number of machines (default 1)
#   NODE_RANK             index of this machine, 0 .. NNODES-1 (default 0)
#   MASTER_ADDR           address of machine 0 (default 127.0.0.1; required when NNODES > 1)
#   PORT or MASTER_PORT   free TCP port on machine 0 (default 29500)
#   PYTHON                interpreter (default python)
#
# Examples:
#   tools/dist_train.sh configs/yolov5/kd_yolov5_l-to-s_8xb16-150e_coco.py 8
#   # two machines with 8 GPUs each; run the same command on both, with NODE_RANK=1 on the second
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.1.1.1 tools/dist_train.sh CONFIG 8 --amp
set -euo pipefail

usage="usage: $0 CONFIG NUM_PROCS [--nnodes N] [--node-rank R] [--master-addr HOST] [--master-port PORT] [train.py options]"
if [[ $# -lt 2 ]]; then
    echo "$usage" >&2
    exit 2
fi
exec bash "$(dirname "$0")/torchrun_launch.sh" train.py "$2" 1 "$usage" "$1" "${@:3}"
