#!/usr/bin/env bash
# All GPUs of one machine from one process: the ('data', 'fsdp') mesh spans every local device,
# so nothing else is needed. Example (8 GPUs, parameters sharded 2 ways, 4 micro-steps):
#
#   launch/single_node.sh configs/k700.py /ckpt/k700 --config.mesh.fsdp=2 --config.accum_steps=4
set -euo pipefail
config=${1:?usage: launch/single_node.sh CONFIG WORKDIR [overrides...]}
workdir=${2:?usage: launch/single_node.sh CONFIG WORKDIR [overrides...]}
shift 2
# Let XLA take the GPU memory it needs up front instead of growing it step by step.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
cores=$(nproc)
workers=$(( cores > 3 ? cores - 2 : 1 ))   # leave two cores to the training process
exec python -m dropmae_jax.main --config="$config" --workdir="$workdir" \
    --config.data.num_workers="$workers" "$@"
