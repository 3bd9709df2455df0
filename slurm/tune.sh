#!/bin/bash
#SBATCH --job-name=phasegan-tune
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --gres=gpu:4
#SBATCH --time=24:00:00
#SBATCH --signal=B:TERM@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=phasegan-tune-%j.out
#
# Ray Tune search of the loss weights over the whole allocation: one trial per GPU (or per
# PHASEGAN_HPC_CPUS_PER_TRIAL CPUs without GPUs). Longer than the time limit: 300 s before it the search is
# stopped (Tune saves its state, trials their checkpoints) and the job requeues itself (slurm/requeue.sh); a
# requeued job resumes the search (--resume) without redoing finished trials. `scancel JOB` stops it for good;
# `scancel --signal=TERM --batch JOB` requeues it now.
#
#   sbatch slurm/tune.sh                              # 64 trials, configs/synthetic.toml, data/synthetic
#   PHASEGAN_HPC_TRIALS=16 PHASEGAN_HPC_CONFIG=configs/foam.toml sbatch slurm/tune.sh --max-epochs 30
#
# Environment: PHASEGAN_HPC_HOME, PHASEGAN_HPC_CONFIG, PHASEGAN_HPC_DATA, PHASEGAN_HPC_NAME,
# PHASEGAN_HPC_STORAGE, PHASEGAN_HPC_TRIALS, PHASEGAN_HPC_BIN, PHASEGAN_HPC_CPUS_PER_TRIAL,
# PHASEGAN_HPC_STOP_WAIT_S and PHASEGAN_HPC_MIN_RUN_S (slurm/requeue.sh). The names without HPC_ still work,
# with a warning, until 0.3.0.
set -euo pipefail

PHASEGAN_HPC_HOME=${PHASEGAN_HPC_HOME:-${PHASEGAN_HOME:-${SLURM_SUBMIT_DIR:-$(pwd)}}}
# shellcheck source=slurm/phasegan-env.sh
source "$PHASEGAN_HPC_HOME/slurm/phasegan-env.sh"
# shellcheck source=slurm/requeue.sh
source "$PHASEGAN_HPC_HOME/slurm/requeue.sh"
# shellcheck source=slurm/ray-cluster.sh
source "$PHASEGAN_HPC_HOME/slurm/ray-cluster.sh"

CONFIG=${PHASEGAN_HPC_CONFIG:-$PHASEGAN_HPC_HOME/configs/synthetic.toml}
DATA=${PHASEGAN_HPC_DATA:-$PHASEGAN_HPC_HOME/data/synthetic}
NAME=${PHASEGAN_HPC_NAME:-search}
STORAGE=${PHASEGAN_HPC_STORAGE:-$PHASEGAN_HPC_HOME/runs}
TRIALS=${PHASEGAN_HPC_TRIALS:-64}

requeue_ray_start  # slurm/requeue.sh: SIGTERM trapped, Ray started; at exit Ray stops, then a requeue if due

if (( RAY_GPUS_PER_NODE > 0 )); then
  gpus=1
  cpus=$((RAY_CPUS_PER_NODE / RAY_GPUS_PER_NODE))
else
  gpus=0
  cpus=${PHASEGAN_HPC_CPUS_PER_TRIAL:-1}
fi
(( cpus >= 1 )) || cpus=1

resume=()
if [[ -d "$STORAGE/tune-$NAME" ]]; then
  resume=(--resume)  # a requeued job continues its search
fi
rc=0
requeue_run "$PHASEGAN_HPC_BIN" tune --trials "$TRIALS" --config "$CONFIG" --data "$DATA" --name "$NAME" \
  --storage "$STORAGE" --gpus-per-trial "$gpus" --cpus-per-trial "$cpus" "${resume[@]}" "$@" || rc=$?
exit "$rc"
