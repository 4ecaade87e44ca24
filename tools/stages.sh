# Sourced by tools/test.sh: `stage NAME CMD...` runs CMD under a "== NAME" heading and records
# its time; the times of the stages that ran are printed when the script ends, failed or not.
STAGE_NAMES=()
STAGE_SECONDS=()
STAGE_START=$SECONDS

stage() {
  local name=$1 t0=$SECONDS rc=0
  shift
  echo "== $name"
  "$@" || rc=$?
  STAGE_NAMES+=("$name$([ $rc = 0 ] || echo " (FAILED, exit $rc)")")
  STAGE_SECONDS+=($((SECONDS - t0)))
  return $rc
}

stage_summary() {
  local i
  echo "== stage times"
  for i in "${!STAGE_NAMES[@]}"; do
    printf '%6d s  %s\n' "${STAGE_SECONDS[$i]}" "${STAGE_NAMES[$i]}"
  done
  printf '%6d s  total\n' $((SECONDS - STAGE_START))
}
trap stage_summary EXIT
