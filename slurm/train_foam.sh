#!/bin/bash
#SBATCH --job-name=phasegan-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --gres=gpu:4
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --output=phasegan-train-%j.out
#
# PhaseGAN training with Ray Train over the whole allocation: one data-parallel worker per GPU (or, without
# GPUs, PHASEGAN_CPU_WORKERS_PER_NODE workers per node). A requeued job resumes from its last checkpoint.
#
#   sbatch slurm/train_foam.sh                      # configs/foam.toml, data/foam, run "foam" in runs/
#   PHASEGAN_CONFIG=configs/synthetic.toml PHASEGAN_DATA=data/synthetic PHASEGAN_NAME=syn \
#     sbatch slurm/train_foam.sh --epochs 70        # extra arguments go to `phasegan-hpc train`
#
# Environment: PHASEGAN_HOME (checkout; default: the submit directory), PHASEGAN_CONFIG, PHASEGAN_DATA,
# PHASEGAN_NAME, PHASEGAN_STORAGE (shared by all nodes), PHASEGAN_BIN, PHASEGAN_CPU_WORKERS_PER_NODE.
set -euo pipefail

PHASEGAN_HOME=${PHASEGAN_HOME:-${SLURM_SUBMIT_DIR:-$(pwd)}}
# shellcheck source=slurm/ray-cluster.sh
source "$PHASEGAN_HOME/slurm/ray-cluster.sh"
# shellcheck source=slurm/phasegan-env.sh
source "$PHASEGAN_HOME/slurm/phasegan-env.sh"

CONFIG=${PHASEGAN_CONFIG:-$PHASEGAN_HOME/configs/foam.toml}
DATA=${PHASEGAN_DATA:-$PHASEGAN_HOME/data/foam}
NAME=${PHASEGAN_NAME:-foam}
STORAGE=${PHASEGAN_STORAGE:-$PHASEGAN_HOME/runs}

trap ray_cluster_stop EXIT
ray_cluster_start

if (( RAY_GPUS_PER_NODE > 0 )); then
  workers=$((RAY_NODES * RAY_GPUS_PER_NODE))
  gpus=1
  cpus=$((RAY_CPUS_PER_NODE / RAY_GPUS_PER_NODE))
else
  per_node=${PHASEGAN_CPU_WORKERS_PER_NODE:-1}
  workers=$((RAY_NODES * per_node))
  gpus=0
  cpus=$((RAY_CPUS_PER_NODE / per_node))
fi
(( cpus >= 1 )) || cpus=1

rc=0
"$PHASEGAN_BIN" train --config "$CONFIG" --data "$DATA" --name "$NAME" --storage "$STORAGE" \
  --workers "$workers" --gpus-per-worker "$gpus" --cpus-per-worker "$cpus" "$@" || rc=$?
exit "$rc"
