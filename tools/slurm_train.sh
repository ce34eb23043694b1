#!/usr/bin/env bash
# Train on a Slurm cluster: srun starts one task per GPU, and each task runs tools/train.py with
# MMEngine's slurm launcher (--launcher slurm), which reads its rank from SLURM_PROCID.
#
# Usage (from the repository root, on a Slurm login node):
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py options ...]
#
# Environment variables:
#   GPUS            total number of tasks, one per GPU (default 8)
#   GPUS_PER_NODE   tasks per node (default 8, or GPUS when it is smaller)
#   CPUS_PER_TASK   CPU cores per task, for data loading (default 5)
#   GRES            generic resources per node (default gpu:GPUS_PER_NODE; set GRES= for CPU nodes)
#   PORT            TCP port of the rank-0 task; give jobs that share a node different ports
#                   (default: MASTER_PORT, else 29500)
#   SRUN_ARGS       extra srun options, split on spaces, e.g. "--time=2-00:00:00 --quotatype=auto"
#   PYTHON          interpreter on the compute nodes (default python)
#
# Example, 16 GPUs on two nodes:
#   GPUS=16 tools/slurm_train.sh gpu kd_l2s configs/yolov5/kd_yolov5_l-to-s_8xb16-150e_coco.py \
#       work_dirs/kd_l2s
set -euo pipefail

if [[ $# -lt 4 ]]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]" >&2
    exit 2
fi
partition=$1
job_name=$2
config=$3
work_dir=$4
shift 4

gpus=${GPUS:-8}
gpus_per_node=${GPUS_PER_NODE:-$((gpus < 8 ? gpus : 8))}
cpus_per_task=${CPUS_PER_TASK:-5}
gres=${GRES-gpu:$gpus_per_node}
read -r -a srun_args <<< "${SRUN_ARGS:-}"
if [[ -n ${PORT:-} ]]; then
    # srun passes the environment on to the tasks, where MMEngine's slurm launcher reads it.
    export MASTER_PORT=$PORT
fi

srun_command=(
    srun
    --partition="$partition"
    --job-name="$job_name"
    --ntasks="$gpus"
    --ntasks-per-node="$gpus_per_node"
    --cpus-per-task="$cpus_per_task"
    --kill-on-bad-exit=1
)
if [[ -n $gres ]]; then
    srun_command+=(--gres="$gres")
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "${srun_command[@]}" "${srun_args[@]}" \
    "${PYTHON:-python}" -u "$repo/tools/train.py" "$config" --work-dir="$work_dir" \
    --launcher slurm "$@"
