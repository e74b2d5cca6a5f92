#!/usr/bin/env bash
# N jaxseg processes on this machine, joined by jax.distributed (one
# coordinator on localhost).
#
#   launch/local_multiprocess.sh 2 --config=configs/brats19_resunet.py --workdir=runs/mp
#
# Where the processes run:
#   - NVIDIA GPUs present (nvidia-smi lists them) and JAX_PLATFORMS unset:
#     the GPUs are split evenly, process i sees its own share through
#     CUDA_VISIBLE_DEVICES (GPUS_PER_PROCESS overrides the share); more
#     processes than GPUs is an error, since each would try to take the
#     memory of a shared GPU.
#   - a TPU VM (/dev/accel0) and JAX_PLATFORMS unset: left to JAX.
#   - otherwise, or with JAX_PLATFORMS=cpu: CPU, each process with
#     DEVICES_PER_PROCESS host devices (default 1), talking over gloo.
#   - any other JAX_PLATFORMS value is passed on as it is.
#
# Environment: PORT (coordinator port, default 12355), DEVICES_PER_PROCESS
# (CPU only), GPUS_PER_PROCESS (GPU only). Logs: <workdir>/process_<i>.log;
# the script exits with the first non-zero status of any process.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 NUM_PROCESSES --config=... --workdir=... [more jaxseg.main flags]" >&2
  exit 2
fi
num=$1; shift
port=${PORT:-12355}
workdir=""
for arg in "$@"; do
  case $arg in --workdir=*) workdir=${arg#--workdir=} ;; esac
done
if [[ -z $workdir ]]; then
  echo "$0: give --workdir=..." >&2
  exit 2
fi

gpu_count() {
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true
  else
    echo 0
  fi
}

mode=cpu
if [[ -n ${JAX_PLATFORMS:-} && ${JAX_PLATFORMS} != cpu ]]; then
  mode=given
elif [[ -z ${JAX_PLATFORMS:-} ]]; then
  gpus=$(gpu_count)
  if [[ $gpus -gt 0 ]]; then
    mode=gpu
  elif [[ -e /dev/accel0 ]]; then
    mode=given
  fi
fi
if [[ $mode == gpu ]]; then
  per=${GPUS_PER_PROCESS:-$((gpus / num))}
  if [[ $per -lt 1 || $((per * num)) -gt $gpus ]]; then
    echo "$0: $num processes need ${per}x$num GPUs, this machine has $gpus;" \
         "run fewer processes, set GPUS_PER_PROCESS, or JAX_PLATFORMS=cpu" >&2
    exit 2
  fi
fi
echo "$0: $num processes on $mode" >&2

mkdir -p "$workdir"
pids=()
for ((i = 0; i < num; i++)); do
  case $mode in
    cpu)
      envs=(JAX_PLATFORMS=cpu
            "XLA_FLAGS=${XLA_FLAGS:-} --xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-1}") ;;
    gpu)
      envs=("CUDA_VISIBLE_DEVICES=$(seq -s, $((i * per)) $((i * per + per - 1)))") ;;
    *)
      envs=() ;;
  esac
  env ${envs[@]+"${envs[@]}"} python -m jaxseg.main "$@" \
      --coordinator_address="localhost:$port" \
      --num_processes="$num" --process_id="$i" >"$workdir/process_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  code=0
  wait "${pids[$i]}" || code=$?
  if [[ $code -ne 0 ]]; then
    echo "process $i failed (exit $code); see $workdir/process_$i.log" >&2
    [[ $status -eq 0 ]] && status=$code
  fi
done
exit $status
