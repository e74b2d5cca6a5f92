#!/usr/bin/env bash
# N jaxseg processes on this machine, joined by jax.distributed (one
# coordinator on localhost). On a CPU each process gets DEVICES_PER_PROCESS
# host devices and the processes talk over gloo; on a GPU machine give each
# process its own GPU with CUDA_VISIBLE_DEVICES instead.
#
#   launch/local_multiprocess.sh 2 --config=configs/brats19_resunet.py --workdir=runs/mp
#
# Environment: PORT (coordinator port, default 12355), DEVICES_PER_PROCESS
# (CPU only, default 1). Logs: <workdir>/process_<i>.log; the script exits
# with the first non-zero status of any process.
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
mkdir -p "$workdir"
platforms=${JAX_PLATFORMS:-cpu}
pids=()
for ((i = 0; i < num; i++)); do
  env JAX_PLATFORMS="$platforms" \
      XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-1}" \
      python -m jaxseg.main "$@" --coordinator_address="localhost:$port" \
      --num_processes="$num" --process_id="$i" >"$workdir/process_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    code=$?
    echo "process $i failed (exit $code); see $workdir/process_$i.log" >&2
    [[ $status -eq 0 ]] && status=$code
  fi
done
exit $status
