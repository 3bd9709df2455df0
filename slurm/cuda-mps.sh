# shellcheck shell=bash
# CUDA MPS (Multi-Process Service) over the current Slurm allocation, for jobs whose worker processes share
# GPUs (slurm/reconstruct.sh: PHASEGAN_HPC_WORKERS_PER_GPU > 1). Without MPS, processes on one GPU take turns
# (time slicing, one context each); with it their kernels run concurrently in one shared context. Sourced;
# it defines functions and sets nothing until mps_start is called.
#
#   mps_start   one MPS control daemon per node (`nvidia-cuda-mps-control -f` in a background srun step, as
#               `ray start --block` is), with this job's own node-local pipe and log directories; exports
#               CUDA_MPS_PIPE_DIRECTORY and CUDA_MPS_LOG_DIRECTORY, so call it before anything that starts
#               CUDA processes (Ray: ray_cluster_start) for them to inherit it
#   mps_stop    sends `quit` to each node's daemon, ends its step, removes the directories
#
# Environment (all optional): PHASEGAN_HPC_MPS (auto [default]: start if MPS_BIN is found, else say so and go on
# without; on: fail without it; off: never), MPS_BIN (default nvidia-cuda-mps-control), MPS_DIR (default
# /tmp/mps-$SLURM_JOB_ID: node-local, one per job, so jobs sharing a node never share a daemon), MPS_WAIT_S
# (seconds to wait for each daemon's pipe; default 30).

_mps_log() { echo "[cuda-mps $(date +%H:%M:%S)] $*" >&2; }

mps_start() {
  : "${SLURM_JOB_ID:?mps_start must run inside a Slurm job}"
  MPS_STARTED=0
  MPS_SRUN_PIDS=()
  local mode=${PHASEGAN_HPC_MPS:-auto}
  MPS_BIN=${MPS_BIN:-nvidia-cuda-mps-control}
  case $mode in
    off) _mps_log "off (PHASEGAN_HPC_MPS=off): processes sharing a GPU take turns"; return 0 ;;
    auto|on) ;;
    *) _mps_log "PHASEGAN_HPC_MPS must be auto, on or off, not '$mode'"; return 2 ;;
  esac
  if ! command -v "$MPS_BIN" >/dev/null 2>&1; then
    if [[ $mode == on ]]; then
      _mps_log "PHASEGAN_HPC_MPS=on, but $MPS_BIN is not on PATH"
      return 1
    fi
    _mps_log "$MPS_BIN not found: processes sharing a GPU take turns (set PHASEGAN_HPC_MPS=off to silence this)"
    return 0
  fi
  MPS_DIR=${MPS_DIR:-/tmp/mps-$SLURM_JOB_ID}
  export CUDA_MPS_PIPE_DIRECTORY=$MPS_DIR/pipe CUDA_MPS_LOG_DIRECTORY=$MPS_DIR/log
  local nodes node
  mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
  for node in "${nodes[@]}"; do
    # shellcheck disable=SC2016  # expanded on the node
    srun --overlap --nodes=1 --ntasks=1 -w "$node" bash -c \
      'mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY" && exec "$0" -f' "$MPS_BIN" &
    MPS_SRUN_PIDS+=($!)
  done
  MPS_STARTED=1
  # The daemon is up once it answers on its pipe directory (the control client fails until then).
  local start=$SECONDS
  for node in "${nodes[@]}"; do
    # shellcheck disable=SC2016  # expanded on the node
    until srun --overlap --nodes=1 --ntasks=1 -w "$node" bash -c 'echo get_server_list | "$0" >/dev/null' \
        "$MPS_BIN" 2>/dev/null; do
      if (( SECONDS - start > ${MPS_WAIT_S:-30} )); then
        _mps_log "the MPS daemon on $node did not answer within ${MPS_WAIT_S:-30}s"
        mps_stop
        return 1
      fi
      sleep 1
    done
  done
  _mps_log "started on ${#nodes[@]} node(s) ($MPS_DIR)"
}

mps_stop() {
  (( ${MPS_STARTED:-0} )) || return 0
  _mps_log "stopping"
  local node pid
  for node in $(scontrol show hostnames "$SLURM_JOB_NODELIST"); do
    # shellcheck disable=SC2016  # expanded on the node
    srun --overlap --nodes=1 --ntasks=1 -w "$node" bash -c 'echo quit | "$0" >/dev/null' "$MPS_BIN" \
      || _mps_log "could not ask the daemon on $node to quit: its step is ended instead"
  done
  for pid in "${MPS_SRUN_PIDS[@]:-}"; do  # a daemon that did not quit: its step ends it
    if [[ -n "$pid" ]]; then
      timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for node in $(scontrol show hostnames "$SLURM_JOB_NODELIST"); do
    srun --overlap --nodes=1 --ntasks=1 -w "$node" rm -rf "$MPS_DIR" || true
  done
  MPS_STARTED=0
}
