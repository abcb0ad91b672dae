#!/usr/bin/env bash
# pipeline_step.sh STAGE COHORT_DIR OUT_DIR [VOLUMES_JOB] - one task of submit_pipeline.sh
# (sbatch keeps a copy of this file from submission). STAGE: preprocess | segment | volumes |
# merge. Reads TUMOR_PYTHON, TUMOR_SETUP, TUMOR_MODULES, TUMOR_*_ARGS and TUMOR_PARTIAL_OK
# (see submit_pipeline.sh).
set -uo pipefail

stage=$1 cohort=$2 out=$3
eval "${TUMOR_SETUP:-}"
# shellcheck disable=SC2086  # a list of module names
[ -z "${TUMOR_MODULES:-}" ] || module load ${TUMOR_MODULES}
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}  # torch and ITK use the CPUs SLURM gave
tumor() { "${TUMOR_PYTHON:-python3}" -m tumorcli "$@"; }
echo "tumor $stage, task ${SLURM_ARRAY_TASK_ID:-1} of ${SLURM_ARRAY_TASK_COUNT:-1}" \
     "(job ${SLURM_JOB_ID:-?}) on $(hostname) at $(date '+%F %T')"

# shellcheck disable=SC2086  # the extra options are a list
case "$stage" in
  preprocess)
    tumor preprocess -i "$cohort" -o "$out" --shard auto ${TUMOR_PREPROCESS_ARGS:-} ;;
  segment)  # -o the preprocessed cohort: each subject's labels go into its own folder
    tumor segment -i "$out" -o "$out" --shard auto ${TUMOR_SEGMENT_ARGS:-} ;;
  volumes)
    tumor volumes "$out" --shard auto ${TUMOR_VOLUMES_ARGS:-} \
      -o "$out/logs/shards/volumes-${SLURM_ARRAY_JOB_ID}-${SLURM_ARRAY_TASK_ID}.csv" ;;
  merge)
    tumor volumes --merge "$out/logs/shards/volumes-$4-"*.csv -o "$out/volumes.csv" || exit
    missing=0
    for subject in "$cohort"/*/; do
      [ -d "$subject" ] || continue
      name=$(basename "$subject")
      [ -f "$out/$name/$name-seg.nii.gz" ] && continue
      missing=$((missing + 1))
      echo "no labels for $name: $(tail -n 1 "$out/logs/$name.log" 2>/dev/null || echo 'no log')"
    done
    [ "$missing" = 0 ] || { echo "$missing subjects without labels (exit 3)"; exit 3; }
    echo "every subject of $cohort is in $out/volumes.csv" ;;
  *) echo "pipeline_step.sh: unknown stage '$stage'" >&2; exit 2 ;;
esac
status=$?
if [ "$status" = 3 ] && [ "${TUMOR_PARTIAL_OK:-1}" = 1 ]; then
  echo "partial batch (exit 3): the next stage goes on with the subjects that succeeded;" \
       "see $out/logs/<subject>.log"
  exit 0
fi
exit "$status"
