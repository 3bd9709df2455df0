# shellcheck shell=bash
# Carry a run over Slurm's time limit. The batch scripts ask for SIGTERM to their shell alone shortly before
# the limit (`#SBATCH --signal=B:TERM@300`: 300 s before the end, or up to 30 s earlier, as slurmctld looks
# at time limits every 30 s) and run their command through requeue_run. On that signal the command is
# stopped as on Ctrl-C (phasegan-hpc unwinds; its checkpoints stay, and the same command resumes from the
# latest), Ray is stopped, and the job puts itself back in the queue (`scontrol requeue`); Slurm starts the
# script again from the top (after its credential window, 2 min by default), which resumes the run. Sourced;
# defines functions and sets nothing until requeue_arm is called.
#
#   requeue_arm       traps SIGTERM; call it first, so that a signal during start-up counts too
#   requeue_run CMD   runs CMD in the background (bash runs a trap only once the foreground command has
#                     returned), waits for it and returns its exit status. On SIGTERM it forwards the signal
#                     to CMD, waits for it to end (at most PHASEGAN_HPC_STOP_WAIT_S, default 200 s, then
#                     SIGKILL), and tells from the job's state who sent it:
#                       RUNNING or SIGNALING: --signal (or a user: `scancel --signal=TERM --batch JOB`): requeue;
#                       COMPLETING (as slurmctld shows a job being ended): a user's `scancel JOB`, which
#                         signals every process of the job and stops it for good, or `scontrol requeue JOB`
#                         and preemption, where Slurm requeues the job itself: no requeue from here.
#                     A signal before CMD starts skips CMD (status 130).
#   requeue_finish    `scontrol requeue $SLURM_JOB_ID` if requeue_run decided so, CMD did not finish anyway,
#                     and CMD ran at least PHASEGAN_HPC_MIN_RUN_S seconds (default 60; a shorter run cannot
#                     have progressed: a --time hardly longer than the signal's lead would requeue forever).
#                     Call it last, once Ray has stopped (from the EXIT trap): Slurm ends a running job that
#                     is requeued at once.
#   requeue_ray_start the start of train_foam.sh and tune.sh: requeue_arm, an EXIT trap that stops Ray
#                     (ray_cluster_stop) and then calls requeue_finish, and ray_cluster_start (source
#                     slurm/ray-cluster.sh too). The script then runs its command through requeue_run.

_requeue_log() { echo "[requeue $(date +%H:%M:%S)] $*" >&2; }

requeue_arm() {
  : "${SLURM_JOB_ID:?requeue_arm must run inside a Slurm job}"
  REQUEUE_DUE=0 REQUEUE_STOP=0 REQUEUE_PID='' REQUEUE_RC='' REQUEUE_RAN_S=0
  _REQUEUE_TRAPPED=0 _REQUEUE_WATCHDOG=''
  trap _requeue_on_term TERM
  if (( ${SLURM_RESTART_COUNT:-0} > 0 )); then
    _requeue_log "job $SLURM_JOB_ID started again (requeued ${SLURM_RESTART_COUNT} time(s)): resuming"
  fi
}

# This job's state as slurmctld shows it now: RUNNING, or COMPLETING once it is being cancelled or requeued.
_requeue_job_state() {
  local info
  info=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null) || true
  if [[ $info =~ JobState=([A-Z_]+) ]]; then
    echo "${BASH_REMATCH[1]}"
  else
    echo UNKNOWN
  fi
}

_requeue_on_term() {
  _REQUEUE_TRAPPED=1
  (( REQUEUE_STOP )) && return 0  # acted on once
  REQUEUE_STOP=1
  local state
  state=$(_requeue_job_state)
  if [[ $state == RUNNING || $state == SIGNALING ]]; then  # SIGNALING: slurmctld delivering --signal
    REQUEUE_DUE=1
    _requeue_log "SIGTERM while RUNNING (the time limit is near): stopping, then requeueing job $SLURM_JOB_ID"
  else
    _requeue_log "SIGTERM, job $SLURM_JOB_ID $state (scancel, scontrol requeue, preemption): stopping"
  fi
  if [[ -n $REQUEUE_PID ]]; then
    kill -TERM "$REQUEUE_PID" 2>/dev/null || true
    local pid=$REQUEUE_PID wait_s=${PHASEGAN_HPC_STOP_WAIT_S:-200}
    ( sleep "$wait_s" &
      sleeper=$!
      trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM  # the command ended in time
      wait "$sleeper"
      _requeue_log "the command did not stop within ${wait_s}s: killing it"
      kill -KILL "$pid" 2>/dev/null ) &
    _REQUEUE_WATCHDOG=$!
  fi
}

requeue_run() {
  if (( REQUEUE_STOP )); then
    _requeue_log "signalled before the command started: not starting it"
    REQUEUE_RC=130
    return "$REQUEUE_RC"
  fi
  local start=$SECONDS
  "$@" &
  REQUEUE_PID=$!
  while true; do
    _REQUEUE_TRAPPED=0
    REQUEUE_RC=0
    wait "$REQUEUE_PID" || REQUEUE_RC=$?
    (( _REQUEUE_TRAPPED )) || break  # a trap cut the wait short: the command may still run, wait again
  done
  REQUEUE_PID=''
  REQUEUE_RAN_S=$((SECONDS - start))
  if [[ -n $_REQUEUE_WATCHDOG ]]; then
    kill "$_REQUEUE_WATCHDOG" 2>/dev/null || true
    _REQUEUE_WATCHDOG=''
  fi
  return "$REQUEUE_RC"
}

requeue_finish() {
  (( ${REQUEUE_DUE:-0} )) || return 0
  local min_s=${PHASEGAN_HPC_MIN_RUN_S:-60}
  if [[ $REQUEUE_RC == 0 ]]; then
    _requeue_log "the command finished before the time limit: job $SLURM_JOB_ID is done"
  elif (( REQUEUE_RAN_S < min_s )); then
    _requeue_log "not requeued: the command ran ${REQUEUE_RAN_S}s (< PHASEGAN_HPC_MIN_RUN_S=${min_s}s), too short to" \
      "progress; give the job a --time well beyond the --signal lead time, then resubmit it to resume"
  else
    _requeue_log "requeueing job $SLURM_JOB_ID: it resumes when it starts again"
    scontrol requeue "$SLURM_JOB_ID" \
      || _requeue_log "job $SLURM_JOB_ID could not be requeued (submitted with --no-requeue?): resubmit it to resume"
  fi
}

requeue_ray_start() {
  requeue_arm
  trap 'ray_cluster_stop; requeue_finish' EXIT  # requeued last: Slurm ends a running job it requeues
  ray_cluster_start
}
