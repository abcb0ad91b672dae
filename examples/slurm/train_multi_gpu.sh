#!/usr/bin/env bash
#SBATCH --job-name=tumor-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --output=%x-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
# train_multi_gpu.sh - `tumor train` data-parallel over every GPU of every node (torchrun),
# safe to preempt and requeue: it checkpoints when stopped and resumes when it starts again.
#
# Usage: sbatch [--nodes=N] [--gres=gpu:G] [--partition=P] [--time=T] \
#          train_multi_gpu.sh OUT_DIR TASK [tumor train TASK options, without -o]
#   e.g. sbatch --nodes=2 --gres=gpu:4 --time=24:00:00 train_multi_gpu.sh runs/swin \
#          segment --data cohort --model swinunetr --epochs 300
#   TASK: segment | refine | predict-post (the same options as `tumor train TASK`)
#
# One srun task per node runs torchrun, which starts GPUS_PER_NODE ranks there; rank 0 logs and
# writes OUT_DIR. SLURM sends USR1 to this script 120 s before the time limit: it passes SIGTERM
# to the ranks, which write OUT_DIR/checkpoint.json and exit, then the job requeues itself.
# A requeued (or resubmitted) job continues with --resume when OUT_DIR/checkpoint.json exists;
# a run that died before its first checkpoint is moved aside and started again.
#
# Environment (all optional):
#   TUMOR_PYTHON   python with tumorcli and torch (default: python3 on PATH)
#   TUMOR_SETUP    shell code run first, e.g. "module load cuda; source ~/venvs/tumor/bin/activate"
#   TUMOR_MODELS   folders of model folders (e.g. for --init NAME)
#   GPUS_PER_NODE  ranks per node (default: the GPUs SLURM gave, else 1: one CPU rank, gloo)
#   MASTER_PORT    rendezvous port on the first node (default 29500)
#   TUMOR_REQUEUE  1 (default): requeue after a time-limit stop; 0: just end with the checkpoint
set -uo pipefail

[ $# -ge 2 ] || { sed -n '12,16p' "$0" >&2; exit 2; }
OUT=$1 TASK=$2
shift 2
eval "${TUMOR_SETUP:-}"
PYTHON=${TUMOR_PYTHON:-python3}
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
MASTER=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
echo "$(date '+%F %T') job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}): $SLURM_NNODES" \
     "node(s) x $GPUS_PER_NODE rank(s), rendezvous $MASTER:${MASTER_PORT:-29500}"

# `tumor train --resume` needs a checkpoint, and a fresh start needs an empty OUT_DIR.
resume=()
if [ -f "$OUT/checkpoint.json" ]; then
  resume=(--resume)
elif [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
  if [ -f "$OUT/split.json" ] || [ -f "$OUT/config.json" ]; then
    aside="$OUT.no-checkpoint-$SLURM_JOB_ID-${SLURM_RESTART_COUNT:-0}"
    echo "$OUT: a run stopped before its first checkpoint; moved to $aside, starting again"
    mv "$OUT" "$aside"
  else
    echo "$OUT: not empty and not a training run; choose another OUT_DIR" >&2
    exit 2
  fi
fi

stopping=0
stop() { # the time limit is near: SIGTERM to every process of the training step
  stopping=1
  echo "$(date '+%F %T') USR1: checkpointing and stopping"
  scancel --signal=TERM "$SLURM_JOB_ID.0" 2>/dev/null || kill -TERM "$srun_pid" 2>/dev/null
}
trap stop USR1

srun --ntasks-per-node=1 --kill-on-bad-exit=1 \
  "$PYTHON" -m torch.distributed.run --nnodes="$SLURM_NNODES" --nproc_per_node="$GPUS_PER_NODE" \
  --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d --rdzv_endpoint="$MASTER:${MASTER_PORT:-29500}" \
  -m tumorcli train "$TASK" -o "$OUT" "${resume[@]}" "$@" &
srun_pid=$!
status=0
while :; do  # a trapped signal interrupts wait: wait again until srun has ended
  wait "$srun_pid"; status=$?
  kill -0 "$srun_pid" 2>/dev/null || break
done

if [ "$stopping" = 1 ] && [ -f "$OUT/checkpoint.json" ] && [ "${TUMOR_REQUEUE:-1}" = 1 ]; then
  echo "$(date '+%F %T') checkpoint written; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
