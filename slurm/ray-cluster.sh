# shellcheck shell=bash
# Start and stop a Ray cluster over the current Slurm allocation. Sourced by the batch scripts in slurm/;
# it defines functions and sets nothing else until ray_cluster_start is called.
#
#   ray_cluster_start   head on the first node, one worker per other node (srun), waits until all joined,
#                       exports RAY_ADDRESS, RAY_NODES, RAY_CPUS_PER_NODE, RAY_GPUS_PER_NODE
#   ray_cluster_stop    stops this job's Ray on every node (not others') and removes its temp dirs
#   ray_node_resources  exports RAY_CPUS_PER_NODE, RAY_GPUS_PER_NODE (Slurm's per-task counts) without Ray
#
# Environment (all optional): RAY_BIN (default: .venv/bin/ray next to this checkout, else ray on PATH),
# RAY_HEAD_IP (default: first address of the head node), RAY_TMPDIR (default: /tmp/ray-$SLURM_JOB_ID; each
# node uses RAY_TMPDIR/<node name>, so nodes that share /tmp never share a temp dir; short, as Ray's socket
# paths must be), RAY_WAIT_S (default 300).

_ray_log() { echo "[ray-cluster $(date +%H:%M:%S)] $*" >&2; }

# Ports from the job id, so jobs sharing a node never collide: a block of 100 ports per job.
_ray_ports() {
  local base=$((20000 + (SLURM_JOB_ID % 400) * 100))
  RAY_PORT=$base
  RAY_PORT_ARGS=(
    --node-manager-port=$((base + 1)) --object-manager-port=$((base + 2))
    --ray-client-server-port=$((base + 3)) --dashboard-agent-listen-port=$((base + 4))
    --dashboard-agent-grpc-port=$((base + 5)) --metrics-export-port=$((base + 6))
    --runtime-env-agent-port=$((base + 7)) --min-worker-port=$((base + 10)) --max-worker-port=$((base + 99))
  )
}

# CPUs and GPUs one node gives Ray: Slurm's per-task counts, with fallbacks.
ray_node_resources() {
  RAY_CPUS_PER_NODE=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-$(nproc)}}
  if [[ -n "${SLURM_GPUS_PER_TASK:-}" ]]; then
    RAY_GPUS_PER_NODE=${SLURM_GPUS_PER_TASK##*:}
  elif [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then
    RAY_GPUS_PER_NODE=$SLURM_GPUS_ON_NODE
  elif [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    local ids
    IFS=, read -r -a ids <<< "$CUDA_VISIBLE_DEVICES"
    RAY_GPUS_PER_NODE=${#ids[@]}
  else
    RAY_GPUS_PER_NODE=0
  fi
  export RAY_CPUS_PER_NODE RAY_GPUS_PER_NODE
}

ray_cluster_start() {
  : "${SLURM_JOB_ID:?ray_cluster_start must run inside a Slurm job}"
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  RAY_BIN=${RAY_BIN:-$([[ -x "$here/.venv/bin/ray" ]] && echo "$here/.venv/bin/ray" || echo ray)}
  RAY_TMPDIR=${RAY_TMPDIR:-/tmp/ray-$SLURM_JOB_ID}
  local nodes
  mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
  RAY_NODES=${#nodes[@]}
  RAY_HEAD_NODE=${nodes[0]}
  _ray_ports
  ray_node_resources
  RAY_HEAD_IP=${RAY_HEAD_IP:-$(srun --overlap --nodes=1 --ntasks=1 -w "$RAY_HEAD_NODE" hostname -I | awk '{print $1}')}
  export RAY_ADDRESS="$RAY_HEAD_IP:$RAY_PORT"
  export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
  export RAY_NODES RAY_CPUS_PER_NODE RAY_GPUS_PER_NODE
  local common=(--num-cpus="$RAY_CPUS_PER_NODE" --num-gpus="$RAY_GPUS_PER_NODE"
                "${RAY_PORT_ARGS[@]}" --block --disable-usage-stats)
  _ray_log "head $RAY_HEAD_NODE ($RAY_ADDRESS), $RAY_NODES node(s) x $RAY_CPUS_PER_NODE CPUs x $RAY_GPUS_PER_NODE GPUs"
  srun --overlap --nodes=1 --ntasks=1 -w "$RAY_HEAD_NODE" \
    "$RAY_BIN" start --head --node-ip-address="$RAY_HEAD_IP" --port="$RAY_PORT" --include-dashboard=false \
    --temp-dir="$RAY_TMPDIR/$RAY_HEAD_NODE" "${common[@]}" &
  RAY_SRUN_PIDS=($!)
  local node
  for node in "${nodes[@]:1}"; do
    sleep 2
    srun --overlap --nodes=1 --ntasks=1 -w "$node" "$RAY_BIN" start --address="$RAY_ADDRESS" \
      --temp-dir="$RAY_TMPDIR/$node" "${common[@]}" &
    RAY_SRUN_PIDS+=($!)
  done
  _ray_wait_for_nodes "$RAY_NODES" "${RAY_WAIT_S:-300}"
}

# Poll the cluster until `want` nodes are alive, or fail after `timeout` seconds.
_ray_wait_for_nodes() {
  local want=$1 timeout=$2 start=$SECONDS python
  python="$(dirname "$RAY_BIN")/python"
  [[ -x "$python" ]] || python=python3
  while (( SECONDS - start < timeout )); do
    if "$python" - "$want" <<'PY' 2>/dev/null; then
import os, sys
import ray
ray.init(address=os.environ["RAY_ADDRESS"], logging_level="error", log_to_driver=False)
alive = sum(1 for n in ray.nodes() if n["Alive"])
ray.shutdown()
sys.exit(0 if alive >= int(sys.argv[1]) else 1)
PY
      _ray_log "all $want node(s) joined"
      return 0
    fi
    sleep 2
  done
  _ray_log "only some of $want node(s) joined within ${timeout}s"
  return 1
}

ray_cluster_stop() {
  # Only this job's Ray: end the srun steps that run `ray start --block` (Slurm then ends every process of
  # those steps). Never `ray stop`, which would kill every Ray on the node, other jobs' included.
  [[ -n "${RAY_TMPDIR:-}" ]] || return 0  # never started
  _ray_log "stopping Ray"
  local pid
  for pid in "${RAY_SRUN_PIDS[@]:-}"; do
    if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in "${RAY_SRUN_PIDS[@]:-}"; do  # only Ray's steps: others (cuda-mps.sh) end on their own
    if [[ -n "$pid" ]]; then wait "$pid" 2>/dev/null || true; fi
  done
  local node
  for node in $(scontrol show hostnames "$SLURM_JOB_NODELIST"); do
    srun --overlap --nodes=1 --ntasks=1 -w "$node" rm -rf "$RAY_TMPDIR" || true
  done
}
