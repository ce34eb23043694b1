#!/usr/bin/env bash
# Shared by dist_train.sh and dist_test.sh: start tools/TOOL in NUM_PROCS processes per machine
# with torchrun and MMEngine's pytorch launcher. Not meant to be called directly.
#
# Usage: tools/torchrun_launch.sh TOOL NUM_PROCS NUM_LEADING "$usage" LEADING_ARGS... [options]
# TOOL is train.py or test.py; the NUM_LEADING arguments after the usage text are passed to it
# first (config, checkpoint); launcher options and the remaining arguments are read as below.
set -euo pipefail

tool=$1
nproc_per_node=$2
num_leading=$3
usage=$4
shift 4
leading_args=("${@:1:num_leading}")
shift "$num_leading"

nnodes=${NNODES:-1}
node_rank=${NODE_RANK:-0}
master_addr=${MASTER_ADDR:-}
master_port=${PORT:-${MASTER_PORT:-29500}}
tool_args=()
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
            tool_args+=("$1")
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
    "$repo/tools/$tool" "${leading_args[@]}" --launcher pytorch "${tool_args[@]}"
