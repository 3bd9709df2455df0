#!/bin/bash
# Submit one phasegan-hpc command as a Ray Job to an existing Ray cluster and follow its logs.
#
#   RAY_ADDRESS=http://head:8265 jobs/submit.sh train --config configs/foam.toml --workers 8 --gpus-per-worker 1
#   jobs/submit.sh --address http://head:8265 tune --trials 64
#
# The exit status is the job's. Environment: RAY_ADDRESS (the cluster's dashboard / job-server address),
# RAY_BIN (default: .venv/bin/ray of this checkout, else ray on PATH), PHASEGAN_HPC_JOB_ID (submission id;
# PHASEGAN_JOB_ID still works, with a warning, until 0.3.0).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PHASEGAN_HPC_HOME=$here
# shellcheck source=slurm/phasegan-env.sh
source "$here/slurm/phasegan-env.sh"  # the renamed variables
ray_bin=${RAY_BIN:-$([[ -x "$here/.venv/bin/ray" ]] && echo "$here/.venv/bin/ray" || echo ray)}
address=${RAY_ADDRESS:-}
if [[ "${1:-}" == "--address" ]]; then
  address=$2
  shift 2
fi
command=${1:-}
case "$command" in
  train | tune | reconstruct) shift ;;
  *)
    echo "usage: jobs/submit.sh [--address URL] train|tune|reconstruct [phasegan-hpc options...]" >&2
    exit 2
    ;;
esac
if [[ -z "$address" ]]; then
  echo "error: no Ray cluster: set RAY_ADDRESS or pass --address http://HEAD:8265" >&2
  exit 2
fi

args=(job submit --address "$address" --runtime-env "$here/jobs/runtime-env/$command.yaml")
if [[ -n "${PHASEGAN_HPC_JOB_ID:-}" ]]; then
  args+=(--submission-id "$PHASEGAN_HPC_JOB_ID")
fi
exec "$ray_bin" "${args[@]}" -- phasegan-hpc "$command" "$@"
