# shellcheck shell=bash
# The environment of the batch scripts, sourced first by each (after PHASEGAN_HPC_HOME is set):
#
#   - Every variable they read has one prefix, PHASEGAN_HPC_. The names of before (PHASEGAN_HOME,
#     PHASEGAN_CONFIG, ...: _phasegan_old_names) keep working until 0.3.0: each one set is copied to its new
#     name (unless that is set too, which wins) with one warning line on stderr, as phasegan_hpc/deprecation.py
#     words it for the command line's old option names.
#   - PHASEGAN_HPC_BIN: which phasegan-hpc to run: as set, else .venv/bin/phasegan-hpc of the checkout
#     (PHASEGAN_HPC_HOME), else phasegan-hpc on PATH.

# The suffixes of the renamed variables: PHASEGAN_<suffix> is now PHASEGAN_HPC_<suffix>.
_phasegan_old_names=(HOME BIN CONFIG DATA NAME STORAGE TRIALS CPU_WORKERS_PER_NODE CPUS_PER_TRIAL WORKERS_PER_GPU
                     MPS CPUS_PER_WORKER BENCH_DEVICE BENCH_RANKS BENCH_BACKENDS BENCH_STEPS BENCH_STEP_TIMEOUT
                     TABLE1_DEVICE TABLE1_SEEDS TABLE1_CONFIG TABLE1_ARGS JOB_ID)

# phasegan_renamed_env SUFFIX...: PHASEGAN_<SUFFIX>, if set, becomes PHASEGAN_HPC_<SUFFIX> (exported; a new name
# already set wins), with one warning line each; the old name is unset, so that nothing warns twice.
phasegan_renamed_env() {
  local suffix old new
  for suffix in "$@"; do
    old=PHASEGAN_$suffix
    new=PHASEGAN_HPC_$suffix
    [[ -n "${!old+set}" ]] || continue
    echo "warning: $old is deprecated and will be removed in 0.3.0: use $new" >&2
    if [[ -z "${!new+set}" ]]; then
      export "$new=${!old}"
    fi
    unset "$old"
  done
}

phasegan_renamed_env "${_phasegan_old_names[@]}"
if [[ -z "${PHASEGAN_HPC_BIN:-}" ]]; then
  if [[ -x "${PHASEGAN_HPC_HOME:-.}/.venv/bin/phasegan-hpc" ]]; then
    PHASEGAN_HPC_BIN="${PHASEGAN_HPC_HOME:-.}/.venv/bin/phasegan-hpc"
  else
    PHASEGAN_HPC_BIN=phasegan-hpc
  fi
fi
export PHASEGAN_HPC_BIN
