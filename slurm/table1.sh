#!/bin/bash
#SBATCH --job-name=phasegan-table1
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=16
#SBATCH --gres=gpu:1
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=phasegan-table1-%j.out
#
# Paper Table 1 at the paper's size on one GPU (paper §3: 256 px, 10,000 unpaired objects and frames, 70
# epochs, batch 16, 32-filter U-Nets and 64-filter PatchGANs), every method trained PHASEGAN_HPC_TABLE1_SEEDS
# times. Resumable: a requeued or resubmitted job with the same OUT_DIR trains only the (method, seed)
# cells that are not scored yet, and an interrupted cell resumes from its last checkpoint.
#
#   sbatch slurm/table1.sh [OUT_DIR]        # default: table1-paper/
#
# Environment: PHASEGAN_HPC_HOME (checkout; default: the submit directory), PHASEGAN_HPC_BIN,
# PHASEGAN_HPC_TABLE1_DEVICE (default cuda), PHASEGAN_HPC_TABLE1_SEEDS (default 3), PHASEGAN_HPC_TABLE1_CONFIG
# (default configs/synthetic.toml), PHASEGAN_HPC_TABLE1_ARGS (more `bench table1` options, replacing the
# paper-sized ones where they repeat, e.g. "--size 64 --train 16 --epochs 1" for a smoke test). The names
# without HPC_ still work, with a warning, until 0.3.0.
set -euo pipefail

PHASEGAN_HPC_HOME=${PHASEGAN_HPC_HOME:-${PHASEGAN_HOME:-${SLURM_SUBMIT_DIR:-$(pwd)}}}
# shellcheck source=slurm/phasegan-env.sh
source "$PHASEGAN_HPC_HOME/slurm/phasegan-env.sh"
out=${1:-table1-paper}
read -r -a extra <<< "${PHASEGAN_HPC_TABLE1_ARGS:-}"
echo "== bench table1 into $out ($(date +%T))"
exec "$PHASEGAN_HPC_BIN" bench table1 --size 256 --train 10000 --epochs 70 --val 1000 --batch 16 --filters 32 \
  --seeds "${PHASEGAN_HPC_TABLE1_SEEDS:-3}" --device "${PHASEGAN_HPC_TABLE1_DEVICE:-cuda}" \
  --config "${PHASEGAN_HPC_TABLE1_CONFIG:-$PHASEGAN_HPC_HOME/configs/synthetic.toml}" --output "$out" \
  "${extra[@]}" --json "$out/table1-result.json"
