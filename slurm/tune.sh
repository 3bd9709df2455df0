#!/bin/bash
#SBATCH --job-name=phasegan-tune
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --gres=gpu:4
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=phasegan-tune-%j.out
#
# Ray Tune search of the loss weights over the whole allocation: one trial per GPU (or per
# PHASEGAN_CPUS_PER_TRIAL CPUs without GPUs). A requeued job resumes the search.
#
#   sbatch slurm/tune.sh                              # 64 trials, configs/synthetic.toml, data/synthetic
#   PHASEGAN_TRIALS=16 PHASEGAN_CONFIG=configs/foam.toml sbatch slurm/tune.sh --max-epochs 30
#
# Environment: PHASEGAN_HOME, PHASEGAN_CONFIG, PHASEGAN_DATA, PHASEGAN_NAME, PHASEGAN_STORAGE,
# PHASEGAN_TRIALS, PHASEGAN_BIN, PHASEGAN_CPUS_PER_TRIAL.
set -euo pipefail

PHASEGAN_HOME=${PHASEGAN_HOME:-${SLURM_SUBMIT_DIR:-$(pwd)}}
# shellcheck source=slurm/ray-cluster.sh
source "$PHASEGAN_HOME/slurm/ray-cluster.sh"
# shellcheck source=slurm/phasegan-env.sh
source "$PHASEGAN_HOME/slurm/phasegan-env.sh"

CONFIG=${PHASEGAN_CONFIG:-$PHASEGAN_HOME/configs/synthetic.toml}
DATA=${PHASEGAN_DATA:-$PHASEGAN_HOME/data/synthetic}
NAME=${PHASEGAN_NAME:-search}
STORAGE=${PHASEGAN_STORAGE:-$PHASEGAN_HOME/runs}
TRIALS=${PHASEGAN_TRIALS:-64}

trap ray_cluster_stop EXIT
ray_cluster_start

if (( RAY_GPUS_PER_NODE > 0 )); then
  gpus=1
  cpus=$((RAY_CPUS_PER_NODE / RAY_GPUS_PER_NODE))
else
  gpus=0
  cpus=${PHASEGAN_CPUS_PER_TRIAL:-1}
fi
(( cpus >= 1 )) || cpus=1

resume=()
if [[ -d "$STORAGE/tune-$NAME" ]]; then
  resume=(--resume)  # a requeued job continues its search
fi
rc=0
"$PHASEGAN_BIN" tune --trials "$TRIALS" --config "$CONFIG" --data "$DATA" --name "$NAME" --storage "$STORAGE" \
  --gpus-per-trial "$gpus" --cpus-per-trial "$cpus" "${resume[@]}" "$@" || rc=$?
exit "$rc"
