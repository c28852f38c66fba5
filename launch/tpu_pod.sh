#!/usr/bin/env bash
# Start the same pre-training command on every worker of a Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE gs://bucket/workdir configs/k700.py [--config.x=y ...]
#
# Every worker runs `python -m dropmae_jax.main`; on a multi-host TPU VM the worker list in the
# environment (TPU_WORKER_HOSTNAMES) makes dropmae_jax.main call jax.distributed.initialize().
# The workdir must be storage every worker reaches (a GCS bucket); the data root likewise.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE WORKDIR CONFIG [--config.overrides ...]" >&2
  exit 2
fi
tpu=$1 zone=$2 workdir=$3 config=$4
shift 4
repo_dir=${DROPMAE_REPO_DIR:-\$HOME/dropmae_jax}   # where the repo is checked out on the workers
cmd="cd $repo_dir && python -m dropmae_jax.main --config=$config --workdir=$workdir --jax_distributed $*"
echo "on every worker of $tpu: $cmd" >&2
exec gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$cmd"
