#!/bin/bash
#SBATCH --job-name=phasegan-gpu-bench
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=16
#SBATCH --gres=gpu:1
#SBATCH --time=00:30:00
#SBATCH --output=phasegan-gpu-bench-%j.out
#
# The GPU figures of docs/benchmarks.md in one job on one GPU: the fast path checked against CPU references
# first (`bench check`, the device-side correction included), then the propagator, G_O inference by batch and
# variant, reconstruction end to end against the model alone (with and without G_D; all frames scored and
# --score none) from one process and from 1, PHASEGAN_HPC_BENCH_RANKS and 4 MPI ranks sharing the GPU (needs
# mpiexec; the fewest ranks keeping >= 0.8 of the model's rate is reconstruct's default workers per GPU), and
# last the training step at the paper's sizes by variant (fp32, bf16 + channels_last, torch.compile). One
# JSON per step lands in OUT_DIR; a failed step does not stop the next ones, and the job fails if any did.
#
#   sbatch slurm/gpu_bench.sh [OUT_DIR]        # default: bench-JOBID/
#
# Environment: PHASEGAN_HPC_HOME (checkout; default: the submit directory), PHASEGAN_HPC_BIN,
# PHASEGAN_HPC_BENCH_DEVICE (default cuda), PHASEGAN_HPC_BENCH_RANKS (default 2, reconstruct's default workers
# per GPU), PHASEGAN_HPC_BENCH_BACKENDS (reconstruct; default local,mpi), PHASEGAN_HPC_BENCH_STEPS (names of
# the steps to run; default all), PHASEGAN_HPC_BENCH_STEP_TIMEOUT (seconds per step; default 1200). The names
# without HPC_ still work, with a warning, until 0.3.0.
set -uo pipefail

PHASEGAN_HPC_HOME=${PHASEGAN_HPC_HOME:-${PHASEGAN_HOME:-${SLURM_SUBMIT_DIR:-$(pwd)}}}
# shellcheck source=slurm/phasegan-env.sh
source "$PHASEGAN_HPC_HOME/slurm/phasegan-env.sh"
out=${1:-bench-${SLURM_JOB_ID:-$(date +%Y%m%d-%H%M%S)}}
device=${PHASEGAN_HPC_BENCH_DEVICE:-cuda}
mkdir -p "$out"
failed=()

steps=" ${PHASEGAN_HPC_BENCH_STEPS:-check propagator inference inference-256 reconstruct-no-gd reconstruct
  reconstruct-score-none reconstruct-1 reconstruct-4 train-step train-step-foam} "
ranks=${PHASEGAN_HPC_BENCH_RANKS:-2}
backends=${PHASEGAN_HPC_BENCH_BACKENDS:-local,mpi}

step() {  # step NAME BENCH [options...]: one benchmark, its JSON in $out/NAME.json
  local name=$1
  shift
  [[ $steps == *" $name "* ]] || return 0
  echo "== $name ($(date +%T))"
  if ! timeout "${PHASEGAN_HPC_BENCH_STEP_TIMEOUT:-1200}" "$PHASEGAN_HPC_BIN" bench "$@" --device "$device" \
      --json "$out/$name.json"; then
    failed+=("$name")
  fi
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
step check check --size 64 --frames 256 --batch 32 --filters 8
step propagator propagator --size 256 --batch 64
step inference inference --size 128 --variants fp32,channels_last,bf16,bf16_cl --repeats 3
step inference-256 inference --size 128 --batch 256 --repeats 3
# Reconstruction as run by default on a GPU (compiled networks), over a bitshuffle-LZ4 archive of 16,384
# frames (0.5 GB raw): one process (local) and $ranks MPI ranks sharing the one GPU.
common=(reconstruct --size 128 --filters 32 --batch 256 --frames 16384 --backends "$backends" --workers "$ranks"
        --no-rss --repeats 2 --compile)
step reconstruct-no-gd "${common[@]}" --no-detector
step reconstruct "${common[@]}"
step reconstruct-score-none "${common[@]}" --score none
# Workers per GPU: one process, and more than the default (the MPI ranks' only difference).
step reconstruct-1 "${common[@]}" --backends mpi --workers 1  # later options win
step reconstruct-4 "${common[@]}" --backends mpi --workers 4
# Training at the paper's sizes (256 px, 32 filters, batch 16; foam: batch 40, 128 -> 256), by variant.
step train-step step --size 256 --batch 16 --filters 32 --methods phasegan --variants fp32,bf16_cl,compile
step train-step-foam step --size 128 --batch 40 --filters 32 --foam --variants fp32,bf16_cl,compile

if (( ${#failed[@]} > 0 )); then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
echo "all steps done: $out"
