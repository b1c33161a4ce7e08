#!/usr/bin/env bash
# lit-vision fit on several machines with torchrun (c10d rendezvous). Run the same command on every node:
#
#   NNODES=2 NPROC_PER_NODE=8 RDZV_ENDPOINT=node001:29500 \
#     experiments/multinode/torchrun.sh experiments/detection/yolo_n_coco.yaml experiments/multinode/detection.yaml \
#     --data.train_images /data/coco/train2017 ...
#
# RDZV_ENDPOINT: host:port of one of the nodes (reachable from all); RDZV_ID: a name shared by the nodes of one job.
# Every start (and every restart: MAX_RESTARTS, or running the script again after a crash) is the same command:
# --ckpt_path last resumes from the newest last.ckpt, exactly, or starts a new run when there is none yet.
# Checkpoints and logs are written by rank 0 only: runs/ must be on a filesystem every node sees (docs/multi_node.md).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: NNODES=N NPROC_PER_NODE=P RDZV_ENDPOINT=host:port $0 RECIPE.yaml OVERRIDE.yaml [lit-vision fit options]" >&2
  exit 2
fi
RECIPE=$1; OVERRIDE=$2; shift 2
: "${NNODES:?set NNODES (number of machines)}" "${NPROC_PER_NODE:?set NPROC_PER_NODE (GPUs per machine)}"
: "${RDZV_ENDPOINT:?set RDZV_ENDPOINT=host:port of one node}"
exec torchrun --nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" \
  --rdzv-backend c10d --rdzv-endpoint "$RDZV_ENDPOINT" --rdzv-id "${RDZV_ID:-lit-vision}" \
  --max-restarts "${MAX_RESTARTS:-0}" \
  "$(command -v lit-vision)" fit --config "$RECIPE" --config "$OVERRIDE" \
  --trainer.num_nodes "$NNODES" --trainer.devices "$NPROC_PER_NODE" --ckpt_path last "$@"
