#!/usr/bin/env bash
# jaxseg on a Cloud TPU VM pod slice: the same command on every worker. JAX
# finds the coordinator and the process ids itself on TPU VMs, so no flags
# are needed. Run from your workstation:
#
#   launch/tpu/run_pod.sh TPU_NAME ZONE configs/brats_unet3d_regions.py /mnt/shared/runs/x
#
# The workdir must be a POSIX path every worker sees (an NFS or Filestore
# mount): Orbax writes the checkpoints from all workers together and jaxseg
# prepares the data there with ordinary file operations (gs:// paths are not
# supported). The repository is expected at ~/jaxseg on every worker
# (installed with: pip install -e ~/jaxseg), the data at the same path too.
set -euo pipefail
tpu=${1:?usage: run_pod.sh TPU_NAME ZONE CONFIG WORKDIR [flags]}
zone=${2:?usage: run_pod.sh TPU_NAME ZONE CONFIG WORKDIR [flags]}
config=${3:?usage: run_pod.sh TPU_NAME ZONE CONFIG WORKDIR [flags]}
workdir=${4:?usage: run_pod.sh TPU_NAME ZONE CONFIG WORKDIR [flags]}
shift 4
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command \
  "cd ~/jaxseg && python -m jaxseg.main --config=$config --workdir=$workdir$extra"
