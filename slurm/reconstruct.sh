#!/bin/bash
#SBATCH --job-name=phasegan-reconstruct
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --gres=gpu:4
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --output=phasegan-reconstruct-%j.out
#
# Batch reconstruction of one movie archive over the whole allocation: PHASEGAN_HPC_WORKERS_PER_GPU Ray actors
# per GPU (default 2, as reconstruct's --gpus-per-worker; or, without GPUs, one per PHASEGAN_HPC_CPUS_PER_WORKER
# CPUs), with CUDA MPS when several share a GPU (slurm/cuda-mps.sh; PHASEGAN_HPC_MPS=auto|on|off). A requeued
# (or resubmitted) job keeps the finished shards.
#
#   sbatch slurm/reconstruct.sh /data/aps/run42.h5                   # model: runs/latest/model.pt
#   PHASEGAN_HPC_MODEL=/scratch/me/runs/foam/model.pt sbatch --nodes=8 slurm/reconstruct.sh run42.h5 \
#     --output /scratch/me/run42_phasegan.h5 --batch-size 256        # further arguments go to reconstruct
#
# Environment: PHASEGAN_HPC_HOME (checkout; default: the submit directory), PHASEGAN_HPC_MODEL,
# PHASEGAN_HPC_BIN, PHASEGAN_HPC_WORKERS_PER_GPU (default 2), PHASEGAN_HPC_MPS (default auto),
# PHASEGAN_HPC_CPUS_PER_WORKER (CPU-only allocations; default 1). The names without HPC_ still work, with a
# warning, until 0.3.0.
set -euo pipefail

if (( $# < 1 )); then
  echo "usage: sbatch slurm/reconstruct.sh ARCHIVE.h5 [phasegan-hpc reconstruct options...]" >&2
  exit 2
fi
PHASEGAN_HPC_HOME=${PHASEGAN_HPC_HOME:-${PHASEGAN_HOME:-${SLURM_SUBMIT_DIR:-$(pwd)}}}
# shellcheck source=slurm/phasegan-env.sh
source "$PHASEGAN_HPC_HOME/slurm/phasegan-env.sh"
# shellcheck source=slurm/ray-cluster.sh
source "$PHASEGAN_HPC_HOME/slurm/ray-cluster.sh"
# shellcheck source=slurm/cuda-mps.sh
source "$PHASEGAN_HPC_HOME/slurm/cuda-mps.sh"

# Several actors share each GPU (DEFAULT_WORKERS_PER_GPU in phasegan_hpc/reconstruct/backends/ray_actors.py:
# the host side of one process no longer keeps a GPU busy alone; docs/benchmarks.md).
per_gpu=${PHASEGAN_HPC_WORKERS_PER_GPU:-2}
ray_node_resources
trap 'ray_cluster_stop; mps_stop' EXIT  # Ray's CUDA processes end before the daemon they use
if (( RAY_GPUS_PER_NODE > 0 && per_gpu > 1 )); then
  mps_start  # before Ray, whose processes inherit its pipe directory
fi
ray_cluster_start

if (( RAY_GPUS_PER_NODE > 0 )); then
  workers=$((RAY_NODES * RAY_GPUS_PER_NODE * per_gpu))
  gpus=$(awk -v k="$per_gpu" 'BEGIN { printf "%.6g", 1 / k }')
  cpus=$((RAY_CPUS_PER_NODE / (RAY_GPUS_PER_NODE * per_gpu)))
else
  cpus=${PHASEGAN_HPC_CPUS_PER_WORKER:-1}
  workers=$((RAY_NODES * (RAY_CPUS_PER_NODE / cpus)))
  gpus=0
fi
(( cpus >= 1 )) || cpus=1
(( workers >= 1 )) || workers=1

echo "reconstruct: $workers worker(s) of $gpus GPU and $cpus CPU each" >&2
rc=0
"$PHASEGAN_HPC_BIN" reconstruct "$@" --backend ray --workers "$workers" --gpus-per-worker "$gpus" \
  --cpus-per-worker "$cpus" || rc=$?
exit "$rc"
