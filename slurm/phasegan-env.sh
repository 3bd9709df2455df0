# shellcheck shell=bash
# Which phasegan-hpc the batch scripts run: PHASEGAN_BIN, else .venv/bin/phasegan-hpc of the checkout,
# else phasegan-hpc on PATH. Sourced after PHASEGAN_HOME is set.
if [[ -z "${PHASEGAN_BIN:-}" ]]; then
  if [[ -x "$PHASEGAN_HOME/.venv/bin/phasegan-hpc" ]]; then
    PHASEGAN_BIN="$PHASEGAN_HOME/.venv/bin/phasegan-hpc"
  else
    PHASEGAN_BIN=phasegan-hpc
  fi
fi
export PHASEGAN_BIN
