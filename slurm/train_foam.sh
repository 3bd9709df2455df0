#!/bin/bash
#SBATCH --job-name=phasegan-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --gres=gpu:4
#SBATCH --time=12:00:00
#SBATCH --signal=B:TERM@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=phasegan-train-%j.out
#
# PhaseGAN training with Ray Train over the whole allocation: one data-parallel worker per GPU (or, without
# GPUs, PHASEGAN_HPC_CPU_WORKERS_PER_NODE workers per node). Longer than the time limit: 300 s before it the
# training is stopped (its checkpoints stay) and the job requeues itself (slurm/requeue.sh); each start resumes
# from the latest checkpoint, until the run is done (the log gains one part per start). `scancel JOB` stops
# it for good; `scancel --signal=TERM --batch JOB` requeues it now.
#
#   sbatch slurm/train_foam.sh                      # configs/foam.toml, data/foam, run "foam" in runs/
#   PHASEGAN_HPC_CONFIG=configs/synthetic.toml PHASEGAN_HPC_DATA=data/synthetic PHASEGAN_HPC_NAME=syn \
#     sbatch slurm/train_foam.sh --epochs 70        # extra arguments go to `phasegan-hpc train`
#
# Environment: PHASEGAN_HPC_HOME (checkout; default: the submit directory), PHASEGAN_HPC_CONFIG,
# PHASEGAN_HPC_DATA, PHASEGAN_HPC_NAME, PHASEGAN_HPC_STORAGE (shared by all nodes), PHASEGAN_HPC_BIN,
# PHASEGAN_HPC_CPU_WORKERS_PER_NODE, PHASEGAN_HPC_STOP_WAIT_S and PHASEGAN_HPC_MIN_RUN_S (slurm/requeue.sh).
# The names without HPC_ (PHASEGAN_CONFIG, ...) still work, with a warning, until 0.3.0.
set -euo pipefail

PHASEGAN_HPC_HOME=${PHASEGAN_HPC_HOME:-${PHASEGAN_HOME:-${SLURM_SUBMIT_DIR:-$(pwd)}}}
# shellcheck source=slurm/phasegan-env.sh
source "$PHASEGAN_HPC_HOME/slurm/phasegan-env.sh"
# shellcheck source=slurm/requeue.sh
source "$PHASEGAN_HPC_HOME/slurm/requeue.sh"
# shellcheck source=slurm/ray-cluster.sh
source "$PHASEGAN_HPC_HOME/slurm/ray-cluster.sh"

CONFIG=${PHASEGAN_HPC_CONFIG:-$PHASEGAN_HPC_HOME/configs/foam.toml}
DATA=${PHASEGAN_HPC_DATA:-$PHASEGAN_HPC_HOME/data/foam}
NAME=${PHASEGAN_HPC_NAME:-foam}
STORAGE=${PHASEGAN_HPC_STORAGE:-$PHASEGAN_HPC_HOME/runs}

requeue_ray_start  # slurm/requeue.sh: SIGTERM trapped, Ray started; at exit Ray stops, then a requeue if due

if (( RAY_GPUS_PER_NODE > 0 )); then
  workers=$((RAY_NODES * RAY_GPUS_PER_NODE))
  gpus=1
  cpus=$((RAY_CPUS_PER_NODE / RAY_GPUS_PER_NODE))
else
  per_node=${PHASEGAN_HPC_CPU_WORKERS_PER_NODE:-1}
  workers=$((RAY_NODES * per_node))
  gpus=0
  cpus=$((RAY_CPUS_PER_NODE / per_node))
fi
(( cpus >= 1 )) || cpus=1

rc=0
requeue_run "$PHASEGAN_HPC_BIN" train --config "$CONFIG" --data "$DATA" --name "$NAME" --storage "$STORAGE" \
  --workers "$workers" --gpus-per-worker "$gpus" --cpus-per-worker "$cpus" "$@" || rc=$?
exit "$rc"
