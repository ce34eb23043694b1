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
config=$1
checkpoint=$2
nproc_per_node=$3
shift 3

nnodes=${NNODES:-1}
node_rank=${NODE_RANK:-0}
master_addr=${MASTER_ADDR:-}
master_port=${PORT:-${MASTER_PORT:-29500}}
test_args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --nnodes | --node-rank | --master-addr | --master-port)
            if [[ $# -lt 2 ]]; then
                echo "$1 needs a value; $usage" >&2
                exit 2
            fi
            case $1 in
                --nnodes) nnodes=$2 ;;
                --node-rank) node_rank=$2 ;;
                --master-addr) master_addr=$2 ;;
                --master-port) master_port=$2 ;;
            esac
            shift 2
            ;;
        *)
            test_args+=("$1")
            shift
            ;;
    esac
done

require_integer() {
    if ! [[ $2 =~ ^[0-9]+$ ]]; then
        echo "$1 must be a non-negative integer, got '$2'" >&2
        exit 2
    fi
}
require_integer NUM_PROCS "$nproc_per_node"
require_integer NNODES "$nnodes"
require_integer NODE_RANK "$node_rank"
require_integer PORT "$master_port"
if ((nproc_per_node < 1 || nnodes < 1 || node_rank >= nnodes)); then
    echo "need NUM_PROCS >= 1, NNODES >= 1 and NODE_RANK < NNODES; got NUM_PROCS=$nproc_per_node, NNODES=$nnodes, NODE_RANK=$node_rank" >&2
    exit 2
fi
if [[ -z $master_addr ]]; then
    if ((nnodes > 1)); then
        echo "MASTER_ADDR (or --master-addr) must name machine 0 when NNODES=$nnodes > 1" >&2
        exit 2
    fi
    master_addr=127.0.0.1
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="$nnodes" \
    --node-rank="$node_rank" \
    --nproc-per-node="$nproc_per_node" \
    --master-addr="$master_addr" \
    --master-port="$master_port" \
    "$repo/tools/test.py" "$config" "$checkpoint" --launcher pytorch "${test_args[@]}"
