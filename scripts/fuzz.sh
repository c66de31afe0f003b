#!/usr/bin/env bash
# Runs every fuzz target of the module, one at a time, for a duration each
# (default 30s; e.g. `scripts/fuzz.sh 5m`), and prints the executions of each.
# A failing target leaves its input in testdata/fuzz/<FuzzName>/ of its
# package: keep that file as a regression seed once the bug is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-30s}"

# Every "func FuzzXxx(" in a _test.go file, as "package-dir name".
mapfile -t targets < <(
  git ls-files --cached --others --exclude-standard -- '*_test.go' |
    xargs grep -H -E '^func Fuzz[A-Za-z0-9_]*\(' |
    sed -E 's#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#\1 \2#; s#^[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#. \1#' |
    sort -u
)
if [ "${#targets[@]}" -eq 0 ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi

failed=()
summary=()
for t in "${targets[@]}"; do
  dir="${t% *}"
  name="${t#* }"
  pkg="./$dir"
  [ "$dir" = "." ] && pkg="."
  printf '\n== %s (%s) for %s\n' "$name" "$pkg" "$duration"
  log=$(mktemp)
  if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$duration" "$pkg" 2>&1 | tee "$log"; then
    status=ok
  else
    status=FAILED
    failed+=("$name")
  fi
  # The last progress line carries the total: "fuzz: elapsed: 30s, execs: 123456 (4115/sec), ..."
  execs=$(grep -oE 'execs: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+' || true)
  summary+=("$(printf '%-24s %-10s %12s execs' "$name" "$status" "${execs:-?}")")
  rm -f "$log"
done

printf '\n== fuzz summary (%s each)\n' "$duration"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "failing targets: ${failed[*]} (crashers are in testdata/fuzz/<FuzzName>/)" >&2
  exit 1
fi
