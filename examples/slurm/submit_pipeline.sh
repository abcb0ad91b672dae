#!/usr/bin/env bash
# submit_pipeline.sh - run `tumor` on a cohort as SLURM array jobs, and return at once:
#   preprocess (array) -> segment (array) -> volumes (array) -> merge (one job: volumes.csv),
#   each stage waiting for the whole previous one (--dependency=afterok).
#
# Usage: submit_pipeline.sh COHORT_DIR OUT_DIR [ARRAY_SIZE]
#   COHORT_DIR  a folder of subject folders (t1n/t1c/t2w/t2f as NIfTI or DICOM; BraTS names work)
#   OUT_DIR     ends up with OUT_DIR/<subject>/ (preprocessed scans, preprocess.json,
#               <subject>-seg.nii.gz and its record <subject>-seg.json), OUT_DIR/volumes.csv,
#               OUT_DIR/logs/<subject>.log (a line per stage and outcome) and
#               OUT_DIR/logs/slurm/ (each task's output)
#   ARRAY_SIZE  tasks per stage (default: the number of subject folders, at most 16); task I of
#               N takes every N-th subject by name (`tumor ... --shard auto`)
# Prints "<stage> <job id>" for the four jobs. Resubmitting resumes: finished subjects are
# skipped. The merge job exits 3 and names the subjects without labels when some failed.
#
# Environment (all optional; nothing site-specific is assumed):
#   TUMOR_PYTHON        the python whose tumorcli the jobs run ("$TUMOR_PYTHON -m tumorcli");
#                       default: the interpreter behind the `tumor` or python3 found on PATH now
#   TUMOR_SETUP         shell code every job runs first, e.g. "source ~/venvs/tumor/bin/activate"
#   TUMOR_MODULES       modules every job loads first ("module load $TUMOR_MODULES")
#   TUMOR_MODELS        folders holding model folders (':'-separated), as for `tumor info`
#   TUMOR_PARTITION     partition of every job (default: the cluster's default partition)
#   TUMOR_SEGMENT_PARTITION  partition of the segment jobs (default: TUMOR_PARTITION)
#   TUMOR_SEGMENT_GPUS  GPUs per segment task (default 0: CPU); asks --gres=gpu:N
#   TUMOR_ACCOUNT       --account of every job
#   TUMOR_TIME          time limit per task, e.g. 02:00:00 (default: the partition's)
#   TUMOR_CPUS          CPUs per task (default 2); TUMOR_MEM memory per task, e.g. 8G
#   TUMOR_ARRAY_LIMIT   at most this many tasks of a stage at once (--array=1-N%LIMIT)
#   TUMOR_SBATCH_ARGS   more sbatch options for every job, e.g. "--qos=short --mail-type=FAIL"
#   TUMOR_PREPROCESS_ARGS  more options for tumor preprocess, e.g. "--atlas mni --crop"
#   TUMOR_SEGMENT_ARGS     more options for tumor segment, e.g. "--model swinunetr --tta"
#   TUMOR_VOLUMES_ARGS     more options for tumor volumes, e.g. "--labels 1=NETC,2=SNFH,4=ET"
#   TUMOR_PARTIAL_OK    1 (default): a task whose batch is partial (exit 3: some subjects
#                       failed, see OUT_DIR/logs) lets the next stage go on with the others;
#                       0: exit 3 stops the chain (later jobs are cancelled)
set -euo pipefail

usage() { sed -n '6,15p' "$0" >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
[ -d "$1" ] || { echo "submit_pipeline.sh: $1: not a folder" >&2; exit 2; }
COHORT=$(cd "$1" && pwd)
mkdir -p "$2"
OUT=$(cd "$2" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUBJECTS=$(find "$COHORT" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | wc -l)
TASKS=${3:-$(( SUBJECTS < 1 ? 1 : (SUBJECTS > 16 ? 16 : SUBJECTS) ))}
case "$TASKS" in
  '' | *[!0-9]* | 0) echo "submit_pipeline.sh: ARRAY_SIZE $TASKS: not a number > 0" >&2; exit 2 ;;
esac

# The jobs run the interpreter found here, by its real path: the same tumorcli, whatever PATH,
# pyenv shim or virtual environment the job's shell has.
find_python() { # the python of the `tumor` on PATH (its #! line), else python3 or python
  local tumor candidate
  tumor=$(command -v tumor || true)
  for candidate in "$([ -z "$tumor" ] || sed -n '1s/^#! *\([^ ]*\).*/\1/p' "$tumor")" \
                   python3 python; do
    [ -n "$candidate" ] || continue
    "$candidate" -c 'import sys, tumorcli; print(sys.executable)' 2>/dev/null && return 0
  done
  return 1
}
TUMOR_PYTHON=${TUMOR_PYTHON:-$(find_python || true)}
[ -n "$TUMOR_PYTHON" ] && "$TUMOR_PYTHON" -c 'import tumorcli' 2>/dev/null || {
  echo "submit_pipeline.sh: no python with tumorcli found;" \
       "set TUMOR_PYTHON=/path/to/venv/bin/python" >&2
  exit 2; }
export TUMOR_PYTHON TUMOR_PARTIAL_OK=${TUMOR_PARTIAL_OK:-1}

mkdir -p "$OUT/logs/slurm" "$OUT/logs/shards"
common=(--parsable --export=ALL --kill-on-invalid-dep=yes --cpus-per-task="${TUMOR_CPUS:-2}")
[ -z "${TUMOR_PARTITION:-}" ] || common+=(--partition="$TUMOR_PARTITION")
[ -z "${TUMOR_ACCOUNT:-}" ] || common+=(--account="$TUMOR_ACCOUNT")
[ -z "${TUMOR_TIME:-}" ] || common+=(--time="$TUMOR_TIME")
[ -z "${TUMOR_MEM:-}" ] || common+=(--mem="$TUMOR_MEM")
# shellcheck disable=SC2206  # word splitting of the extra options is wanted
[ -z "${TUMOR_SBATCH_ARGS:-}" ] || common+=(${TUMOR_SBATCH_ARGS})
array="1-$TASKS${TUMOR_ARRAY_LIMIT:+%$TUMOR_ARRAY_LIMIT}"
step="$HERE/pipeline_step.sh"

submit() { # submit NAME [sbatch options...] -- STEP ARGS: prints the job id
  local name=$1; shift
  local options=(); while [ "$1" != -- ]; do options+=("$1"); shift; done; shift
  local id
  id=$(sbatch "${common[@]}" --job-name="tumor-$name" "${options[@]}" "$step" "$@")
  echo "${id%%;*}"   # --parsable prints "id" or "id;cluster"
}

segment_options=()
[ -z "${TUMOR_SEGMENT_PARTITION:-}" ] || segment_options+=(--partition="$TUMOR_SEGMENT_PARTITION")
[ "${TUMOR_SEGMENT_GPUS:-0}" = 0 ] || segment_options+=(--gres="gpu:$TUMOR_SEGMENT_GPUS")

tasks_out="$OUT/logs/slurm/%x-%A_%a.out"
prep=$(submit preprocess --array="$array" --output="$tasks_out" -- preprocess "$COHORT" "$OUT")
seg=$(submit segment --array="$array" --output="$tasks_out" --dependency="afterok:$prep" \
      "${segment_options[@]}" -- segment "$COHORT" "$OUT")
vol=$(submit volumes --array="$array" --output="$tasks_out" --dependency="afterok:$seg" \
      -- volumes "$COHORT" "$OUT")
merge=$(submit merge --output="$OUT/logs/slurm/%x-%j.out" --dependency="afterok:$vol" \
        -- merge "$COHORT" "$OUT" "$vol")
echo "preprocess $prep"
echo "segment $seg"
echo "volumes $vol"
echo "merge $merge"
