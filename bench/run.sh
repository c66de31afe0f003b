#!/usr/bin/env bash
# ghz benchmark of usher against a trivial gRPC server; see bench/README.md.
#
#   bash bench/run.sh                 # full run: -n 20000 -c 50 per scenario, writes bench/results.md
#   QUICK=1 bash bench/run.sh         # smoke: -n 2000 -c 10, writes bench/results-quick.md
#
# Environment: USHER_REF (build usher from this git ref instead of the
# working tree), N (requests per scenario), C (concurrency), TOKENS (tokens per
# distinct-*.json and mix.json, default N), OUT (results file), FLOOR (1: run
# the in-process floor benchmark, default 1 unless QUICK), MAX_SECONDS (bound
# of one ghz run, default 300), KEEP=1 keeps the temporary directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  N=${N:-2000} C=${C:-10} FLOOR=${FLOOR:-0} OUT=${OUT:-$ROOT/bench/results-quick.md}
else
  N=${N:-20000} C=${C:-50} FLOOR=${FLOOR:-1} OUT=${OUT:-$ROOT/bench/results.md}
fi
TOKENS=${TOKENS:-$N}
MAX_SECONDS=${MAX_SECONDS:-300}
GHZ_VERSION=v0.93.0
CALL=usher.v1.TokenService/ValidateToken

die() {
  echo "bench: $*" >&2
  exit 1
}
for v in N C TOKENS MAX_SECONDS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: want a positive integer"
done
[[ -r /proc/self/stat ]] || die "needs /proc (Linux) to read the servers' CPU time"
CLK_TCK=$(getconf CLK_TCK)

START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/usher-bench.XXXXXX")
PIDS=()

# stop PID: SIGTERM, at most 5 s to exit, then SIGKILL.
stop() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# forget PID: drop it from PIDS, so that cleanup never signals a reused PID.
forget() {
  local keep=() p
  for p in ${PIDS[@]+"${PIDS[@]}"}; do
    [[ $p == "$1" ]] || keep+=("$p")
  done
  PIDS=(${keep[@]+"${keep[@]}"})
}

stop_server() {
  stop "$1"
  forget "$1"
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    stop "$pid"
  done
  if [[ ${KEEP:-0} == 1 ]]; then
    echo "bench: kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port prints a loopback port nothing listens on.
free_port() {
  local p i
  for ((i = 0; i < 100; i++)); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  die "no free loopback port found"
}

# wait_port PID PORT LOG: until 127.0.0.1:PORT accepts connections, at most 15 s.
wait_port() {
  local pid=$1 port=$2 log=$3 i
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || die "server exited before listening on $port: $(tail -n 20 "$log")"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  die "nothing listens on 127.0.0.1:$port after 15 s: $(tail -n 20 "$log")"
}

# cpu_ticks PID: utime + stime of the process, in clock ticks (proc(5) fields 14 and 15).
cpu_ticks() {
  local stat rest
  read -r stat <"/proc/$1/stat" || die "process $1 is gone"
  rest=${stat##*) } # the command name may hold spaces; the fields after it do not
  # shellcheck disable=SC2086
  set -- $rest # $1 is field 3 (state), so field 14 is ${12}
  echo $((${12} + ${13}))
}

# ghz ARGS...: one ghz run, at most MAX_SECONDS. It runs in the background so
# that a signal interrupts the wait at once (ghz's own -x overrides -n).
ghz() {
  local pid rc=0
  timeout "$MAX_SECONDS" "$TMP/ghz" --insecure --call "$CALL" "$@" &
  pid=$!
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  forget "$pid"
  ((rc != 124)) || echo "bench: ghz did not finish within $MAX_SECONDS s" >&2
  return "$rc"
}

ROWS=()
BAD=()

# scenario NAME PID PORT DATA: one measured ghz run against the server PID.
scenario() {
  local name=$1 pid=$2 port=$3 data=$4 before after line count rps p50 p99 statuses errors end cpu
  echo "bench: $name: ghz -n $N -c $C -D $(basename "$data")" >&2
  before=$(cpu_ticks "$pid")
  ghz -D "$data" -n "$N" -c "$C" -O json -o "$TMP/$name.ghz.json" "127.0.0.1:$port" || die "$name: ghz failed"
  after=$(cpu_ticks "$pid")
  line=$("$TMP/benchcheck" ghz "$TMP/$name.ghz.json")
  IFS=$'\t' read -r count rps p50 p99 statuses errors end <<<"$line"
  [[ $count -gt 0 ]] || die "$name: ghz sent no request"
  cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$count" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
  if [[ $errors != 0 || $end != normal ]]; then
    BAD+=("$name: $errors errors, end reason $end")
    statuses="$statuses; end: $end"
  fi
  ROWS+=("$name	$count	$rps	$p50	$p99	$cpu	$statuses")
}

# warmup PORT: requests that are not measured, so that each server starts warm.
warmup() {
  ghz -D "$TMP/data/repeated.json" -n $((N < 1000 ? N : 1000)) -c "$C" -O json -o "$TMP/warmup.json" "127.0.0.1:$1" >/dev/null ||
    die "warm-up against 127.0.0.1:$1 failed"
}

echo "bench: building into $TMP" >&2
FLOOR_DIR=$ROOT
if [[ -n ${USHER_REF:-} ]]; then
  # usher as of a git ref (e.g. to compare with HEAD~1); the kit itself comes from the working tree.
  mkdir "$TMP/src"
  git archive "$USHER_REF" | tar -x -C "$TMP/src"
  (cd "$TMP/src" && timeout 600 go build -o "$TMP/usher" ./cmd/usher)
  FLOOR_DIR=$TMP/src
  USHER_DESC="usher at $USHER_REF ($(git rev-parse --short "$USHER_REF^{commit}"))"
else
  timeout 600 go build -o "$TMP/usher" ./cmd/usher
  USHER_DESC="usher from the working tree at $(git rev-parse --short HEAD 2>/dev/null || echo "?")"
  if [[ -n $(git status --porcelain 2>/dev/null || true) ]]; then
    USHER_DESC+=" + uncommitted changes"
  fi
fi
timeout 600 go build -o "$TMP/trivial" ./bench/cmd/trivial
timeout 600 go build -o "$TMP/benchtokens" ./bench/cmd/benchtokens
timeout 600 go build -o "$TMP/benchcheck" ./bench/cmd/benchcheck
GOBIN=$TMP timeout 600 go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"

USHER_PORT=$(free_port)
TRIVIAL_PORT=$(free_port)
[[ $USHER_PORT != "$TRIVIAL_PORT" ]] || TRIVIAL_PORT=$(free_port)
echo "bench: generating $TOKENS tokens per file" >&2
"$TMP/benchtokens" -out "$TMP/data" -port "$USHER_PORT" -n "$TOKENS"

# The baseline first, alone.
"$TMP/trivial" -listen "127.0.0.1:$TRIVIAL_PORT" >"$TMP/trivial.log" 2>&1 &
TRIVIAL_PID=$!
PIDS+=("$TRIVIAL_PID")
wait_port "$TRIVIAL_PID" "$TRIVIAL_PORT" "$TMP/trivial.log"
warmup "$TRIVIAL_PORT"
scenario "trivial (repeated)" "$TRIVIAL_PID" "$TRIVIAL_PORT" "$TMP/data/repeated.json"
stop_server "$TRIVIAL_PID"

"$TMP/usher" serve --config "$TMP/data/usher.yaml" --log-level warn >"$TMP/usher.log" 2>&1 &
USHER_PID=$!
PIDS+=("$USHER_PID")
wait_port "$USHER_PID" "$USHER_PORT" "$TMP/usher.log"
"$TMP/benchcheck" wait -addr "127.0.0.1:$USHER_PORT" -timeout 15s || die "usher not SERVING: $(tail -n 20 "$TMP/usher.log")"
# One token checked before measuring: a wrong configuration fails here, not after the runs.
"$TMP/benchcheck" verdicts -addr "127.0.0.1:$USHER_PORT" -expect "$TMP/data/expected.json" "$TMP/data/repeated.json" >/dev/null
warmup "$USHER_PORT"
scenario "usher repeated" "$USHER_PID" "$USHER_PORT" "$TMP/data/repeated.json"
scenario "usher distinct-rs256" "$USHER_PID" "$USHER_PORT" "$TMP/data/distinct-rs256.json"
scenario "usher distinct-es256" "$USHER_PID" "$USHER_PORT" "$TMP/data/distinct-es256.json"
scenario "usher distinct-eddsa" "$USHER_PID" "$USHER_PORT" "$TMP/data/distinct-eddsa.json"
scenario "usher mix" "$USHER_PID" "$USHER_PORT" "$TMP/data/mix.json"

# After the runs, so that no token is seen by usher before its scenario.
echo "bench: checking every verdict" >&2
VERDICTS_OK=1
"$TMP/benchcheck" verdicts -addr "127.0.0.1:$USHER_PORT" -expect "$TMP/data/expected.json" \
  "$TMP"/data/{repeated,distinct-rs256,distinct-es256,distinct-eddsa,mix}.json >"$TMP/verdicts.tsv" || VERDICTS_OK=0
[[ $VERDICTS_OK == 1 ]] || BAD+=("unexpected verdicts (see the verdicts table)")
stop_server "$USHER_PID"

# The in-process floor: the standard library's verification alone (service/bench_test.go).
FLOOR_NOTE="not measured (FLOOR=0)"
declare -A FLOOR_US=()
if [[ $FLOOR == 1 ]]; then
  echo "bench: go test -bench BenchmarkFloor ./service/" >&2
  if (cd "$FLOOR_DIR" && timeout 600 go test -run '^$' -bench '^BenchmarkFloor$' -benchtime "${FLOOR_BENCHTIME:-3000x}" ./service/) >"$TMP/floor.txt" 2>&1; then
    while read -r alg ns; do
      FLOOR_US[$alg]=$(awk -v ns="$ns" 'BEGIN { printf "%.1f", ns / 1000 }')
    done < <(awk '$1 ~ /^BenchmarkFloor\// { split($1, a, "/"); sub(/-[0-9]+$/, "", a[2]); print a[2], $3 }' "$TMP/floor.txt")
    FLOOR_NOTE=""
    for alg in RS256 ES256 EdDSA; do
      FLOOR_NOTE+="$alg ${FLOOR_US[$alg]:-n/a} µs, "
    done
    FLOOR_NOTE="${FLOOR_NOTE%, } (\`go test -run '^\$' -bench '^BenchmarkFloor\$' -benchtime ${FLOOR_BENCHTIME:-3000x} ./service/\`)"
  else
    FLOOR_NOTE="not measured: go test failed ($(tail -n 3 "$TMP/floor.txt" | tr '\n' ' '))"
  fi
fi

# The report.
field() { # field ROW INDEX (1-based, tab-separated)
  cut -f "$2" <<<"$1"
}
TRIVIAL_CPU=$(field "${ROWS[0]}" 6)
{
  echo "# usher ghz benchmark"
  echo
  echo "- date: $START to $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- host: nproc $(nproc), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo "unknown cpu"); load average $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo "- $(go version)"
  echo "- $USHER_DESC"
  echo "- command: \`${USHER_REF:+USHER_REF=$USHER_REF }QUICK=$QUICK N=$N C=$C TOKENS=$TOKENS bash bench/run.sh\`"
  echo "- each scenario: \`ghz --insecure --call $CALL -D FILE -n $N -c $C -O json 127.0.0.1:PORT\` (ghz $GHZ_VERSION, one connection, after a warm-up of $((N < 1000 ? N : 1000)) requests per server)"
  echo "- data: $TOKENS tokens per distinct-*.json and mix.json (ghz cycles through a file's entries); mix is RS256: 80 % valid, 10 % wrong audience, 5 % expired, 5 % bad signature"
  echo "- server CPU: utime + stime of the server process from /proc/PID/stat before and after the run, divided by the requests (CLK_TCK $CLK_TCK: one tick is $(awk -v hz="$CLK_TCK" -v n="$N" 'BEGIN { printf "%.2f", 1e6 / hz / n }') µs/request at $N requests)"
  echo
  echo "| scenario | requests | RPS | p50 ms | p99 ms | server CPU µs/request | × trivial CPU | gRPC statuses |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|"
  for row in "${ROWS[@]}"; do
    IFS=$'\t' read -r name count rps p50 p99 cpu statuses <<<"$row"
    ratio=$(awk -v a="$cpu" -v b="$TRIVIAL_CPU" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
    echo "| $name | $count | $rps | $p50 | $p99 | $cpu | $ratio | $statuses |"
  done
  echo
  echo "In-process floor (per verification): $FLOOR_NOTE"
  echo
  echo "Goals:"
  echo
  hit=$(field "${ROWS[1]}" 6)
  echo "- cache hit (usher repeated) ≤ 1.2 × trivial CPU/request: $(awk -v a="$hit" -v b="$TRIVIAL_CPU" 'BEGIN {
    if (b <= 0) { print "n/a (trivial CPU measured as 0)"; exit }
    printf "%.1f µs ≤ %.1f µs (%.2f×): %s", a, 1.2 * b, a / b, (a <= 1.2 * b ? "met" : "NOT met") }')"
  i=2
  for alg in RS256 ES256 EdDSA; do
    cpu=$(field "${ROWS[$i]}" 6)
    name=$(field "${ROWS[$i]}" 1)
    if [[ -n ${FLOOR_US[$alg]:-} ]]; then
      line=$(awk -v a="$cpu" -v t="$TRIVIAL_CPU" -v f="${FLOOR_US[$alg]}" 'BEGIN {
        b = t + 1.3 * f; printf "%.1f µs ≤ %.1f + 1.3 × %.1f = %.1f µs: %s", a, t, f, b, (a <= b ? "met" : "NOT met") }')
    else
      line="$cpu µs (floor not measured)"
    fi
    if [[ $alg == RS256 ]]; then
      echo "- uncached RS256 ($name) ≤ trivial + 1.3 × floor: $line"
    else
      echo "- for reference, $name ≤ trivial + 1.3 × floor: $line"
    fi
    i=$((i + 1))
  done
  echo
  echo "Verdicts (every entry of each file sent once after the runs, checked against what benchtokens generated):"
  echo
  echo "| file | entries | verdicts | check |"
  echo "|---|---:|---|---|"
  while IFS=$'\t' read -r file entries dist check; do
    echo "| $file | $entries | $dist | $check |"
  done <"$TMP/verdicts.tsv"
  if ((${#BAD[@]})); then
    echo
    echo "Problems:"
    echo
    for b in "${BAD[@]}"; do
      echo "- $b"
    done
  fi
} >"$OUT"

cat "$OUT"
echo "bench: wrote $OUT" >&2
((${#BAD[@]} == 0)) || die "${BAD[*]}"
