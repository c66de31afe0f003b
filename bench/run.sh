#!/usr/bin/env bash
# Server-level benchmark of usher against a trivial gRPC server and OPA; see bench/README.md.
#
#   bash bench/run.sh                       # full run (about 15 min on 2 cores), writes bench/results.md
#   BEFORE_REF=HEAD~1 bash bench/run.sh     # the same, with usher@before rows built from a git ref
#   QUICK=1 bash bench/run.sh               # smoke: -n 2000 -c 10, one repetition, no OPA, writes bench/results-quick.md
#
# Environment (defaults in bench/README.md): DURATION (seconds per run; empty:
# -n N runs), N, C, REPS, RATE, TOKENS, PIN, SERVER_CPU, CLIENT_CPU,
# SCENARIOS, RATE_SCENARIOS, OPA, DISTINCT_MILLION, MILLION_TOKENS,
# MILLION_SECONDS, WARM, CACHE_MAX_ENTRIES, CACHE_MAX_BYTES, USHER_REF,
# BEFORE_REF, FLOOR, FLOOR_BENCHTIME, CHECK_ENTRIES, MAX_SECONDS, BENCH_CACHE,
# OUT, KEEP=1 keeps the temporary directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() {
  echo "bench: $*" >&2
  exit 1
}
say() {
  echo "bench: $*" >&2
}

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  N=${N:-2000} C=${C:-10} REPS=${REPS:-1} FLOOR=${FLOOR:-0} OPA=${OPA:-0} DISTINCT_MILLION=${DISTINCT_MILLION:-0}
  WARM=${WARM:-0} DURATION=${DURATION-} OUT=${OUT:-$ROOT/bench/results-quick.md} PROFILE=${PROFILE:-0}
else
  if [[ -n ${N:-} && -z ${DURATION+set} ]]; then
    DURATION="" # N given alone: -n N runs, as before
  fi
  N=${N:-20000} C=${C:-50} REPS=${REPS:-3} FLOOR=${FLOOR:-1} OPA=${OPA:-1} DISTINCT_MILLION=${DISTINCT_MILLION:-1}
  WARM=${WARM:-1} DURATION=${DURATION-5} OUT=${OUT:-$ROOT/bench/results.md} PROFILE=${PROFILE:-1}
fi
RATE=${RATE:-5000}
if [[ -n $DURATION ]]; then
  TOKENS=${TOKENS:-$((16000 * DURATION))}
else
  TOKENS=${TOKENS:-$N}
fi
MAX_SECONDS=${MAX_SECONDS:-300}
PROFILE_SECONDS=${PROFILE_SECONDS:-10}
PROFILE_SCENARIOS=${PROFILE_SCENARIOS:-trivial trivial-same hit distinct hitmiss}
PROFILE_DIR=${PROFILE_DIR:-${OUT%.md}-profiles}
CACHE_MAX_ENTRIES=${CACHE_MAX_ENTRIES:-10000}
CACHE_MAX_BYTES=${CACHE_MAX_BYTES:-67108864}
MILLION_TOKENS=${MILLION_TOKENS:-1000000}
MILLION_SECONDS=${MILLION_SECONDS:-150}
CHECK_ENTRIES=${CHECK_ENTRIES:-2000}
FLOOR_BENCHTIME=${FLOOR_BENCHTIME:-3000x}
HTTP_SECONDS=${DURATION:-5} # OPA and trivial-http always run for a duration
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/usher-bench}
GHZ_VERSION=v0.93.0
OPA_VERSION=v1.22.2
VEGETA_VERSION=v12.13.0
CALL=usher.v1.TokenService/ValidateToken
OPA_PATH=/v1/data/usher/bench/allow

for v in N C REPS RATE TOKENS PROFILE_SECONDS MAX_SECONDS MILLION_TOKENS MILLION_SECONDS CHECK_ENTRIES HTTP_SECONDS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: want a positive integer"
done
[[ -z $DURATION || $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION=$DURATION: want whole seconds, or empty for -n N runs"
[[ $CACHE_MAX_ENTRIES =~ ^(-1|[1-9][0-9]*)$ ]] || die "CACHE_MAX_ENTRIES=$CACHE_MAX_ENTRIES: want a positive integer or -1"
[[ $CACHE_MAX_BYTES =~ ^[1-9][0-9]*$ ]] || die "CACHE_MAX_BYTES=$CACHE_MAX_BYTES: want a positive integer"
[[ -r /proc/self/stat ]] || die "needs /proc (Linux) to read the servers' CPU time and memory"
CLK_TCK=$(getconf CLK_TCK)

# The scenarios: name -> server kind, data file, label.
declare -A S_KIND=(
  [trivial]=trivial [trivial-same]=trivial-same [hit]=usher [distinct]=usher [hitmiss]=usher [mix]=usher [es256]=usher [eddsa]=usher
  [opa]=opa [opa-hit]=opa [trivial-http]=trivial-http
)
declare -A S_DATA=(
  [trivial]=repeated [trivial-same]=repeated [hit]=repeated [distinct]=distinct-rs256 [hitmiss]=hitmiss [mix]=mix
  [es256]=distinct-es256 [eddsa]=distinct-eddsa [opa]=distinct-rs256 [opa-hit]=repeated [trivial-http]=repeated
)
declare -A S_LABEL=(
  [trivial]="trivial (repeated)" [trivial-same]="trivial, usher's answer (repeated)" [hit]="hit (repeated)" [distinct]="distinct-rs256" [hitmiss]="hitmiss (50 % hit)"
  [mix]="mix (rejections)" [es256]="distinct-es256" [eddsa]="distinct-eddsa"
  [opa]="OPA distinct-rs256" [opa-hit]="OPA repeated" [trivial-http]="trivial-http (repeated)"
)
if [[ $OPA == 1 ]]; then
  SCENARIOS=${SCENARIOS:-trivial trivial-same hit distinct hitmiss mix es256 eddsa opa opa-hit trivial-http}
else
  SCENARIOS=${SCENARIOS:-trivial trivial-same hit distinct hitmiss mix es256 eddsa}
fi
if [[ $QUICK == 1 ]]; then
  RATE_SCENARIOS=${RATE_SCENARIOS:-hitmiss}
else
  RATE_SCENARIOS=${RATE_SCENARIOS:-trivial hit distinct hitmiss mix opa}
fi
for s in $SCENARIOS; do
  [[ -n ${S_KIND[$s]:-} ]] || die "SCENARIOS: unknown scenario $s (known: ${!S_KIND[*]})"
  if [[ $OPA != 1 && (${S_KIND[$s]} == opa || ${S_KIND[$s]} == trivial-http) ]]; then
    die "SCENARIOS names $s but OPA=$OPA"
  fi
done
has() { # has WORD LIST...
  local w=$1 x
  shift
  for x in $*; do [[ $x == "$w" ]] && return 0; done
  return 1
}
has trivial $SCENARIOS || die "SCENARIOS must include trivial, the baseline"

# Pinning: servers on one CPU, load generators on another.
ALLOWED=()
while IFS= read -r part; do
  if [[ $part == *-* ]]; then
    for ((i = ${part%-*}; i <= ${part#*-}; i++)); do ALLOWED+=("$i"); done
  elif [[ -n $part ]]; then
    ALLOWED+=("$part")
  fi
done < <(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status | tr ',' '\n')
PIN_NOTE=""
if [[ -z ${PIN:-} ]]; then
  PIN=0
  ((${#ALLOWED[@]} >= 2)) && PIN=1
fi
if [[ $PIN == 1 ]]; then
  if ! command -v taskset >/dev/null; then
    say "taskset (util-linux) not found: not pinning"
    PIN=0 PIN_NOTE="not pinned: taskset (util-linux) not found"
  elif ((${#ALLOWED[@]} < 2)); then
    say "fewer than 2 CPUs allowed: not pinning"
    PIN=0 PIN_NOTE="not pinned: fewer than 2 CPUs"
  fi
fi
SRV=() CLI=()
if [[ $PIN == 1 ]]; then
  SERVER_CPU=${SERVER_CPU:-${ALLOWED[0]}}
  CLIENT_CPU=${CLIENT_CPU:-${ALLOWED[1]}}
  [[ $SERVER_CPU != "$CLIENT_CPU" ]] || die "SERVER_CPU and CLIENT_CPU are both $SERVER_CPU"
  SRV=(taskset -c "$SERVER_CPU")
  CLI=(taskset -c "$CLIENT_CPU")
  PIN_NOTE="pinned with taskset: servers on CPU $SERVER_CPU (Go's runtime then takes GOMAXPROCS 1), load generators on CPU $CLIENT_CPU"
elif [[ -z $PIN_NOTE ]]; then
  PIN_NOTE="not pinned (PIN=0): servers, load generators and everything else share the CPUs"
fi

START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
T0=$SECONDS
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/usher-bench.XXXXXX")
mkdir "$TMP/logs" "$TMP/reports"
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
    say "kept $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port prints a loopback port nothing listens on, below the ephemeral
# range when it can: a server started again on the same port must not find it
# taken by some client's outgoing connection.
EPHEMERAL_LOW=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
  local p i lo=20000 span=40000
  if ((EPHEMERAL_LOW > 21000)); then span=$((EPHEMERAL_LOW - lo)); fi
  for ((i = 0; i < 100; i++)); do
    p=$((lo + RANDOM % span))
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

# rss_kib PID: VmRSS of the process, in kB.
rss_kib() {
  awk '/^VmRSS:/ { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# bounded SECONDS CMD...: CMD in the background (so that a signal interrupts
# the wait at once), killed after SECONDS.
bounded() {
  local limit=$1 pid rc=0
  shift
  timeout "$limit" "$@" &
  pid=$!
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  forget "$pid"
  ((rc != 124)) || say "$1 did not finish within $limit s"
  return "$rc"
}

ghz() {
  bounded "$MAX_SECONDS" ${CLI[@]+"${CLI[@]}"} "$TMP/ghz" --insecure --call "$CALL" "$@"
}

# vegeta_attack TARGETS OUT ARGS...: one vegeta attack, results to OUT.
vegeta_attack() {
  local targets=$1 out=$2
  shift 2
  bounded "$MAX_SECONDS" ${CLI[@]+"${CLI[@]}"} "$TMP/vegeta" attack -format=json -targets="$targets" -output="$out" -timeout=10s "$@"
}

# ---------------------------------------------------------------- builds
say "building into $TMP"
mkdir -p "$BENCH_CACHE"
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
TARGETS=(usher)
if [[ -n ${BEFORE_REF:-} ]]; then
  mkdir "$TMP/before-src"
  git archive "$BEFORE_REF" | tar -x -C "$TMP/before-src"
  (cd "$TMP/before-src" && timeout 600 go build -o "$TMP/usher-before" ./cmd/usher)
  BEFORE_DESC="usher@before: usher at $BEFORE_REF ($(git rev-parse --short "$BEFORE_REF^{commit}"))"
  TARGETS+=(before)
fi
timeout 600 go build -o "$TMP/trivial" ./bench/cmd/trivial
timeout 600 go build -o "$TMP/benchtokens" ./bench/cmd/benchtokens
timeout 600 go build -o "$TMP/benchcheck" ./bench/cmd/benchcheck
GOBIN=$TMP timeout 600 go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"

# cached_install NAME PACKAGE@VERSION BINARY LIMIT: go install once into
# BENCH_CACHE/NAME, then reuse; prints the binary's path.
cached_install() {
  local name=$1 pkg=$2 bin=$3 limit=$4
  if [[ ! -x $BENCH_CACHE/$name ]]; then
    say "building $pkg (once; cached as $BENCH_CACHE/$name)"
    rm -rf "$TMP/gobin-$name"
    GOBIN="$TMP/gobin-$name" timeout "$limit" go install "$pkg" >&2 || die "go install $pkg failed"
    mv "$TMP/gobin-$name/$bin" "$BENCH_CACHE/$name.tmp.$$"
    mv "$BENCH_CACHE/$name.tmp.$$" "$BENCH_CACHE/$name"
  fi
  echo "$BENCH_CACHE/$name"
}
if [[ $OPA == 1 ]]; then
  OPA_BIN=$(cached_install "opa-$OPA_VERSION" "github.com/open-policy-agent/opa@$OPA_VERSION" opa 1800)
  "$OPA_BIN" version | grep -q "^Version: ${OPA_VERSION#v}$" || die "$OPA_BIN is not OPA $OPA_VERSION"
  VEGETA_BIN=$(cached_install "vegeta-$VEGETA_VERSION" "github.com/tsenart/vegeta/v12@$VEGETA_VERSION" vegeta 600)
  ln -s "$VEGETA_BIN" "$TMP/vegeta"
fi

# ---------------------------------------------------------------- data
declare -A PORT=()
for kind in trivial usher before http pprof; do
  for ((i = 0; i < 10; i++)); do
    p=$(free_port)
    has "$p" ${PORT[@]+"${PORT[@]}"} || break
  done
  PORT[$kind]=$p
done
WARM_N=0
if [[ $WARM == 1 && $CACHE_MAX_ENTRIES -gt 0 ]]; then
  WARM_N=$CACHE_MAX_ENTRIES
fi
say "generating $TOKENS tokens per file and $WARM_N to fill usher's cache"
"$TMP/benchtokens" -out "$TMP/data" -port "${PORT[usher]}" -n "$TOKENS" -warm "$WARM_N" \
  -cache-entries "$CACHE_MAX_ENTRIES" -cache-bytes "$CACHE_MAX_BYTES"
sed "s/^listen: .*/listen: \"127.0.0.1:${PORT[before]}\"/" "$TMP/data/usher.yaml" >"$TMP/data/usher-before.yaml"
# PROFILE=1's usher: the same, with pprof on a loopback metrics listener.
{ cat "$TMP/data/usher.yaml"; printf 'metrics_listen: "127.0.0.1:%s"\npprof: true\n' "${PORT[pprof]}"; } >"$TMP/data/usher-pprof.yaml"
DATA_PATHS=()
declare -A ENTRY_COUNT=()
for f in repeated distinct-rs256 distinct-es256 distinct-eddsa mix hitmiss; do
  DATA_PATHS+=("$TMP/data/$f.json")
  ENTRY_COUNT[$f]=$(grep -o '"token"' "$TMP/data/$f.json" | wc -l)
done
if [[ $OPA == 1 ]]; then
  for f in repeated distinct-rs256; do
    "$TMP/benchcheck" targets -url "http://127.0.0.1:${PORT[http]}$OPA_PATH" "$TMP/data/$f.json" >"$TMP/data/$f.targets"
  done
fi

# ---------------------------------------------------------------- servers
SERVER_PID=""
SERVER_PORT=""

# start_server KIND LOG: a fresh server process of KIND, listening and ready.
start_server() {
  local kind=$1 log=$2
  case $kind in
  trivial)
    SERVER_PORT=${PORT[trivial]}
    ${SRV[@]+"${SRV[@]}"} "$TMP/trivial" -listen "127.0.0.1:$SERVER_PORT" ${PPROF_PORT:+-pprof "127.0.0.1:$PPROF_PORT"} >>"$log" 2>&1 &
    ;;
  trivial-same)
    SERVER_PORT=${PORT[trivial]}
    ${SRV[@]+"${SRV[@]}"} "$TMP/trivial" -listen "127.0.0.1:$SERVER_PORT" -response "$TMP/data/usher-response.bin" \
      ${PPROF_PORT:+-pprof "127.0.0.1:$PPROF_PORT"} >>"$log" 2>&1 &
    ;;
  trivial-http)
    SERVER_PORT=${PORT[http]}
    ${SRV[@]+"${SRV[@]}"} "$TMP/trivial" -http "127.0.0.1:$SERVER_PORT" >>"$log" 2>&1 &
    ;;
  usher)
    SERVER_PORT=${PORT[usher]}
    ${SRV[@]+"${SRV[@]}"} "$TMP/usher" serve --config "$TMP/data/usher${PPROF_PORT:+-pprof}.yaml" --log-level warn >>"$log" 2>&1 &
    ;;
  before)
    SERVER_PORT=${PORT[before]}
    ${SRV[@]+"${SRV[@]}"} "$TMP/usher-before" serve --config "$TMP/data/usher-before.yaml" --log-level warn >>"$log" 2>&1 &
    ;;
  opa)
    SERVER_PORT=${PORT[http]}
    ${SRV[@]+"${SRV[@]}"} "$OPA_BIN" run --server --addr "127.0.0.1:$SERVER_PORT" --skip-version-check \
      --log-level error "$TMP/data/opa.rego" "$TMP/data/opa-data.json" >>"$log" 2>&1 &
    ;;
  *) die "unknown server kind $kind" ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_port "$SERVER_PID" "$SERVER_PORT" "$log"
  if [[ $kind == usher || $kind == before ]]; then
    "$TMP/benchcheck" wait -addr "127.0.0.1:$SERVER_PORT" -timeout 15s ||
      die "$kind not SERVING: $(tail -n 20 "$log")"
  fi
}

# warmup KIND [FILL]: unmeasured requests, so that each server process starts
# warm; usher's cache is then filled with tokens of warm.json (WARM=1), unless
# FILL is 0.
warmup() {
  local kind=$1 fill=${2:-1}
  case $kind in
  opa | trivial-http)
    vegeta_attack "$TMP/data/repeated.targets" "$TMP/warmup.bin" -rate=1000/s -duration=1s ||
      die "warm-up of $kind failed"
    ;;
  *)
    ghz -D "$TMP/data/repeated.json" -n $((N < 1000 ? N : 1000)) -c "$C" -O json -o "$TMP/warmup.json" "127.0.0.1:$SERVER_PORT" >/dev/null ||
      die "warm-up of $kind failed"
    if [[ $kind != trivial* && $WARM_N -gt 0 && $fill == 1 ]]; then
      ghz -D "$TMP/data/warm.json" -n "$WARM_N" -c "$C" -O json -o "$TMP/warmup.json" "127.0.0.1:$SERVER_PORT" >/dev/null ||
        die "cache fill of $kind failed"
    fi
    ;;
  esac
}

# The rows of every measured run: key, mode, rep, requests, RPS, p50, p99,
# CPU µs/request, RSS MiB, statuses, errors, end reason.
: >"$TMP/runs.tsv"
BAD=()
NOTES=()

# measure SCENARIO TARGET MODE REP: one measured run on a fresh server.
measure() {
  local sc=$1 target=$2 mode=$3 rep=$4 kind key data log before after rss line count rps p50 p99 statuses errors end cpu report
  kind=${S_KIND[$sc]}
  [[ $kind == usher ]] && kind=$target
  key="$sc:$target"
  data=$TMP/data/${S_DATA[$sc]}
  log=$TMP/logs/$sc-$target.log
  report=$TMP/reports/$sc-$target-$mode-$rep
  start_server "$kind" "$log"
  warmup "$kind"
  local rate=()
  [[ $mode == rate ]] && rate=(--rps "$RATE")
  say "rep $rep: $(label "$key") [$mode]"
  before=$(cpu_ticks "$SERVER_PID")
  case $kind in
  opa | trivial-http)
    if [[ $mode == rate ]]; then
      # At most C requests in flight, as ghz -c C --rps: a server slower than
      # RATE gets fewer requests rather than an ever longer queue.
      vegeta_attack "$data.targets" "$report.bin" -rate="$RATE/s" -workers="$C" -max-workers="$C" -duration="${HTTP_SECONDS}s" ||
        die "$key: vegeta failed"
    else
      vegeta_attack "$data.targets" "$report.bin" -rate=0 -workers="$C" -max-workers="$C" -duration="${HTTP_SECONDS}s" ||
        die "$key: vegeta failed"
    fi
    after=$(cpu_ticks "$SERVER_PID")
    "$TMP/vegeta" report -type=json "$report.bin" >"$report.json"
    line=$("$TMP/benchcheck" vegeta "$report.json")
    ;;
  *)
    local amount=(-n "$N")
    [[ -n $DURATION ]] && amount=(-z "${DURATION}s" --duration-stop wait)
    ghz -D "$data.json" "${amount[@]}" -c "$C" ${rate[@]+"${rate[@]}"} -O json -o "$report.json" "127.0.0.1:$SERVER_PORT" ||
      die "$key: ghz failed"
    after=$(cpu_ticks "$SERVER_PID")
    line=$("$TMP/benchcheck" ghz "$report.json")
    ;;
  esac
  rss=$(rss_kib "$SERVER_PID")
  stop_server "$SERVER_PID"
  IFS=$'\t' read -r count rps p50 p99 statuses errors end <<<"$line"
  [[ $count -gt 0 ]] || die "$key: no request sent"
  cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$count" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
  if [[ $errors != 0 || ($end != normal && $end != timeout) ]]; then
    BAD+=("$(label "$key") [$mode, rep $rep]: $errors errors, end reason $end")
  fi
  local entries=${ENTRY_COUNT[${S_DATA[$sc]}]}
  if [[ ${S_DATA[$sc]} != repeated && $count -gt $entries ]]; then
    NOTES+=("$(label "$key") [$mode, rep $rep]: $count requests for $entries entries of ${S_DATA[$sc]}.json: tokens were sent more than once (raise TOKENS)")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$mode" "$rep" "$count" "$rps" "$p50" "$p99" "$cpu" \
    "$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')" "$statuses" "$errors" "$end" >>"$TMP/runs.tsv"
}

# label KEY: the row name of scenario:target.
label() {
  local sc=${1%%:*} target=${1#*:}
  case $target in
  usher) echo "usher ${S_LABEL[$sc]}" ;;
  before) echo "usher@before ${S_LABEL[$sc]}" ;;
  *) echo "${S_LABEL[$sc]}" ;;
  esac
}

# ---------------------------------------------------------------- checks
# Every server answers as expected before anything is measured: a wrong
# configuration fails here, and a scenario cannot silently measure a rejection
# path. Each measured run has a server process of its own, which has seen none
# of its tokens.
VERDICT_ROWS=()
for target in "${TARGETS[@]}"; do
  say "checking $target's verdicts (the first $CHECK_ENTRIES entries of each file)"
  start_server "$target" "$TMP/logs/check-$target.log"
  ok=1
  "$TMP/benchcheck" verdicts -addr "127.0.0.1:$SERVER_PORT" -expect "$TMP/data/expected.json" -max "$CHECK_ENTRIES" \
    "${DATA_PATHS[@]}" >"$TMP/verdicts-$target.tsv" 2>"$TMP/verdicts-$target.err" ||
    ok=0
  stop_server "$SERVER_PID"
  while IFS=$'\t' read -r file entries dist check; do
    VERDICT_ROWS+=("$target	${file}	$entries	$dist	$check")
  done <"$TMP/verdicts-$target.tsv"
  [[ $ok == 1 ]] || die "$target answered unexpected verdicts: $(cat "$TMP/verdicts-$target.tsv" "$TMP/verdicts-$target.err")"
  if [[ $target == usher ]]; then
    # usher's answer to the repeated token, for trivial-same to answer with.
    start_server usher "$TMP/logs/check-usher.log"
    RESPONSE_BYTES=$("$TMP/benchcheck" response -addr "127.0.0.1:$SERVER_PORT" -out "$TMP/data/usher-response.bin" "$TMP/data/repeated.json") ||
      die "usher's answer to repeated.json could not be recorded"
    stop_server "$SERVER_PID"
  fi
done
OPA_CHECK=""
if [[ $OPA == 1 ]]; then
  say "checking OPA's answers"
  start_server opa "$TMP/logs/check-opa.log"
  "$TMP/benchcheck" opa -url "http://127.0.0.1:$SERVER_PORT$OPA_PATH" -expect "$TMP/data/expected.json" -max 20 \
    "$TMP/data/repeated.json" "$TMP/data/mix.json" >"$TMP/opa-check.tsv" ||
    die "OPA does not allow exactly the valid tokens: $(cat "$TMP/opa-check.tsv")"
  stop_server "$SERVER_PID"
  OPA_CHECK=$(awk -F'\t' '{ printf "%s%s (%s entries: %s)", (NR > 1 ? "; " : ""), $1, $2, $3 }' "$TMP/opa-check.tsv")
fi

# ---------------------------------------------------------------- runs
ENTRIES=()
for sc in $SCENARIOS; do
  if [[ ${S_KIND[$sc]} == usher ]]; then
    for target in "${TARGETS[@]}"; do ENTRIES+=("$sc:$target"); done
  else
    ENTRIES+=("$sc:${S_KIND[$sc]}")
  fi
done
for ((rep = 1; rep <= REPS; rep++)); do
  # Interleaved: every repetition runs every scenario, starting at a different one.
  off=$(((rep - 1) * ${#ENTRIES[@]} / REPS))
  for ((j = 0; j < ${#ENTRIES[@]}; j++)); do
    e=${ENTRIES[$(((off + j) % ${#ENTRIES[@]}))]}
    sc=${e%%:*} target=${e#*:}
    measure "$sc" "$target" sat "$rep"
    if has "$sc" $RATE_SCENARIOS; then
      measure "$sc" "$target" rate "$rep"
    fi
  done
done

# ---------------------------------------------------------------- 1 M distinct tokens
declare -A MILLION=()
if [[ $DISTINCT_MILLION == 1 ]]; then
  for target in "${TARGETS[@]}"; do
    log=$TMP/logs/million-$target.log
    start_server "$target" "$log"
    warmup "$target" 0 # the caches start empty: idle is the RSS without them
    idle=$(rss_kib "$SERVER_PID")
    say "$target: up to $MILLION_TOKENS distinct EdDSA tokens for at most $MILLION_SECONDS s"
    rc=0
    bounded $((MILLION_SECONDS + 60)) ${CLI[@]+"${CLI[@]}"} "$TMP/benchcheck" flood -addr "127.0.0.1:$SERVER_PORT" \
      -seed "$TMP/data/ed25519.seed" -pid "$SERVER_PID" -max "$MILLION_TOKENS" -duration "${MILLION_SECONDS}s" -c "$C" \
      >"$TMP/million-$target.tsv" 2>"$TMP/million-$target.err" || rc=$?
    stop_server "$SERVER_PID"
    if ((rc != 0)); then
      BAD+=("1 M distinct tokens, $target: $(tail -n 2 "$TMP/million-$target.err" | tr '\n' ' ')")
    fi
    # sent, seconds, idle, RSS at 10 %, 25 %, 50 %, 75 % of the tokens sent, at the end, peak (kB)
    MILLION[$target]=$(awk -F'\t' -v idle="$idle" '
      $1 == "sample" { n++; s[n] = $3; r[n] = $4 }
      $1 == "done" { sent = $2; secs = $6; end = $7; hwm = $8 }
      END {
        if (sent == "") { print ""; exit }
        split("0.10 0.25 0.50 0.75", q, " ")
        out = sent "\t" secs "\t" idle
        for (j = 1; j <= 4; j++) {
          v = end
          for (i = 1; i <= n; i++) if (s[i] >= q[j] * sent) { v = r[i]; break }
          out = out "\t" v
        }
        print out "\t" end "\t" hwm
      }' "$TMP/million-$target.tsv")
  done
fi

# ---------------------------------------------------------------- floor
FLOOR_NOTE="not measured (FLOOR=0)"
declare -A FLOOR_US=()
if [[ $FLOOR == 1 ]]; then
  say "BenchmarkFloor ./service/"
  if (cd "$FLOOR_DIR" && timeout 600 go test -c -o "$TMP/service.test" ./service/) >"$TMP/floor.txt" 2>&1 &&
    (cd "$FLOOR_DIR/service" && timeout 600 ${SRV[@]+"${SRV[@]}"} "$TMP/service.test" -test.run '^$' -test.bench '^BenchmarkFloor$' \
      -test.benchtime "$FLOOR_BENCHTIME") >>"$TMP/floor.txt" 2>&1; then
    while read -r alg ns; do
      FLOOR_US[$alg]=$(awk -v ns="$ns" 'BEGIN { printf "%.1f", ns / 1000 }')
    done < <(awk '$1 ~ /^BenchmarkFloor\// { split($1, a, "/"); sub(/-[0-9]+$/, "", a[2]); print a[2], $3 }' "$TMP/floor.txt")
    FLOOR_NOTE=""
    for alg in RS256 ES256 EdDSA; do
      FLOOR_NOTE+="$alg ${FLOOR_US[$alg]:-n/a} µs, "
    done
    FLOOR_NOTE="${FLOOR_NOTE%, } (\`BenchmarkFloor\` in \`service/bench_test.go\`, \`-benchtime $FLOOR_BENCHTIME\`${SRV[*]:+, pinned like the servers})"
  else
    FLOOR_NOTE="not measured: go test failed ($(tail -n 3 "$TMP/floor.txt" | tr '\n' ' '))"
  fi
fi

# ---------------------------------------------------------------- profiles
# profile_run SCENARIO: a fresh server with pprof, loaded at saturation for
# PROFILE_SECONDS + 2 s by ghz while a CPU profile of PROFILE_SECONDS is taken;
# writes PROFILE_DIR/SCENARIO.pprof and a -top -cum listing beside it.
profile_run() {
  local sc=$1 kind data log pid
  kind=${S_KIND[$sc]}
  data=$TMP/data/${S_DATA[$sc]}.json
  log=$TMP/logs/profile-$sc.log
  PPROF_PORT=${PORT[pprof]}
  start_server "$kind" "$log"
  PPROF_PORT=""
  warmup "$kind"
  say "profile: $sc, $PROFILE_SECONDS s"
  ghz -D "$data" -z "$((PROFILE_SECONDS + 2))s" --duration-stop wait -c "$C" -O json -o "$TMP/reports/profile-$sc.json" \
    "127.0.0.1:$SERVER_PORT" >/dev/null &
  pid=$!
  curl -sf --max-time $((PROFILE_SECONDS + 30)) -o "$PROFILE_DIR/$sc.pprof" \
    "http://127.0.0.1:${PORT[pprof]}/debug/pprof/profile?seconds=$PROFILE_SECONDS" ||
    BAD+=("profile of $sc: the pprof endpoint did not answer")
  wait "$pid" || BAD+=("profile of $sc: ghz failed")
  stop_server "$SERVER_PID"
  if [[ -s $PROFILE_DIR/$sc.pprof ]]; then
    go tool pprof -top -cum -nodecount=100000 "$PROFILE_DIR/$sc.pprof" >"$TMP/profile-$sc.all" 2>/dev/null
    head -n 66 "$TMP/profile-$sc.all" >"$PROFILE_DIR/$sc.txt"
  fi
  return 0
}

# Where the CPU goes, per profiled scenario: the cumulative share of the
# samples under each of these (they overlap: an allocation in the engine is in
# both), and that share of the scenario's CPU/request from the runs above.
PROFILE_GROUPS=(
  "gRPC's server path, all of a request's work|^google\.golang\.org/grpc\.\(\*Server\)\.handleStream$"
  "usher's handler (grpcapi)|^github\.com/usher-dev/usher/grpcapi\."
  "the engine (service)|^github\.com/usher-dev/usher/service\."
  "crypto (signature checks)|^crypto/"
  "request unmarshalling (protobuf)|^google\.golang\.org/protobuf/proto\.UnmarshalOptions\.unmarshal$"
  "response marshalling (protobuf)|^google\.golang\.org/protobuf/proto\.MarshalOptions\.marshal$"
  "metrics (prometheus)|^github\.com/prometheus/"
  "allocation (runtime.mallocgc)|^runtime\.mallocgc$"
  "GC, background workers (runtime.gcBgMarkWorker)|^runtime\.gcBgMarkWorker$"
  "goroutine stack growth (runtime.newstack)|^runtime\.newstack$"
  "system calls (read, write, futex)|^(syscall\.(Raw)?Syscall6?|internal/runtime/syscall(/linux)?\.Syscall6)$"
  "scheduler (runtime.schedule)|^runtime\.schedule$"
)
# profile_share FILE REGEX: the largest cum % of the functions matching REGEX.
profile_share() {
  awk -v re="$2" 'NF >= 6 && $5 ~ /%$/ && $6 ~ re { v = $5 + 0; if (v > m) m = v } END { printf "%.1f", m }' "$1"
}
PROFILED=()
if [[ $PROFILE == 1 ]]; then
  mkdir -p "$PROFILE_DIR"
  for sc in $PROFILE_SCENARIOS; do
    has "$sc" $SCENARIOS || continue
    [[ ${S_KIND[$sc]} == usher || ${S_KIND[$sc]} == trivial* ]] || continue
    [[ ${S_KIND[$sc]} != trivial-http ]] || continue
    profile_run "$sc"
    [[ -s $PROFILE_DIR/$sc.txt ]] && PROFILED+=("$sc")
  done
fi

# ---------------------------------------------------------------- report
# med KEY MODE FIELD: the median of a field over the repetitions ("—" if none).
med() {
  awk -F'\t' -v k="$1" -v m="$2" -v f="$3" '$1 == k && $2 == m && $f != "n/a" { print $f }' "$TMP/runs.tsv" | sort -g |
    awk '{ a[NR] = $1 } END {
      if (NR == 0) { print "—"; exit }
      v = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
      print v }'
}
fmt() { # fmt PRINTF-FORMAT VALUE: "—" stays
  if [[ $2 == "—" ]]; then echo "—"; else awk -v v="$2" -v f="$1" 'BEGIN { printf f, v }'; fi
}
ratio() { # ratio A B: A / B with two decimals
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "—" || b == "—" || b <= 0) print "—"; else printf "%.2f", a / b }'
}
cpu_of() { med "$1" sat 8; }
# paired A B: the median over the repetitions of A's CPU/request over B's in
# the same repetition (usher and usher@before run one after the other).
paired() {
  awk -F'\t' -v a="$1" -v b="$2" '$2 == "sat" && $1 == a { x[$3] = $8 } $2 == "sat" && $1 == b { y[$3] = $8 }
    END { for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r] }' "$TMP/runs.tsv" | sort -g |
    awk '{ a[NR] = $1 } END {
      if (NR == 0) { print "—"; exit }
      printf "%.2f\n", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
runs_of() { awk -F'\t' -v k="$1" '$1 == k && $2 == "sat"' "$TMP/runs.tsv" | wc -l; }

TRIVIAL_CPU=$(cpu_of trivial:trivial)
TRIVIAL_HTTP_CPU="—"
has trivial-http $SCENARIOS && TRIVIAL_HTTP_CPU=$(cpu_of trivial-http:trivial-http)
OPA_CPU="—"
has opa $SCENARIOS && OPA_CPU=$(cpu_of opa:opa)
MODE_DESC="-n $N"
[[ -n $DURATION ]] && MODE_DESC="-z ${DURATION}s --duration-stop wait"
CMDLINE=""
for v in QUICK DURATION N C REPS RATE TOKENS PIN OPA DISTINCT_MILLION WARM PROFILE USHER_REF BEFORE_REF; do
  [[ -n ${!v:-} ]] && CMDLINE+="$v=${!v} "
done
MiB() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
elapsed() { echo "$(((SECONDS - T0) / 60)) min $(((SECONDS - T0) % 60)) s"; }
{
  echo "# usher server benchmark"
  echo
  echo "- date: $START to $(date -u +%Y-%m-%dT%H:%M:%SZ) ($(elapsed))"
  echo "- host: nproc $(nproc), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo "unknown cpu"); load average $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo "- $(go version); $PIN_NOTE"
  echo "- usher: $USHER_DESC"
  [[ -n ${BEFORE_DESC:-} ]] && echo "- $BEFORE_DESC"
  echo "- command: \`${CMDLINE}bash bench/run.sh\`"
  echo "- each run: a fresh server process, warmed up with $((N < 1000 ? N : 1000)) requests of repeated.json$([[ $WARM_N -gt 0 ]] && echo " and, for usher, its cache filled with $WARM_N tokens of warm.json"), then \`ghz --insecure --call $CALL -D FILE $MODE_DESC -c $C [--rps $RATE] -O json 127.0.0.1:PORT\` (ghz $GHZ_VERSION, one connection)$([[ $OPA == 1 ]] && echo "; HTTP peers: \`vegeta attack -format=json -duration=${HTTP_SECONDS}s -workers=$C -max-workers=$C\` and \`-rate=0\` or \`-rate=$RATE/s\` (vegeta $VEGETA_VERSION, HTTP/1.1 keep-alive)")"
  echo "- $REPS interleaved repetitions of each run; the table gives medians; \"sat\": as fast as the load generator goes, \"@$RATE\": at a fixed $RATE requests/s"
  echo "- data: $TOKENS tokens per distinct-*.json; hitmiss: every other request the repeated token; mix: RS256, 80 % valid, 10 % wrong audience, 5 % expired, 5 % bad signature; usher's caches: cache_max_entries $CACHE_MAX_ENTRIES, cache_max_bytes $CACHE_MAX_BYTES"
  if [[ $OPA == 1 ]]; then
    echo "- OPA $OPA_VERSION: \`opa run --server --addr 127.0.0.1:PORT --skip-version-check --log-level error opa.rego opa-data.json\`, POST {\"input\": {\"token\", \"expected_audience\"}} to $OPA_PATH; the policy: \`io.jwt.decode_verify\` with cert = the JWKS, alg RS256, iss, aud, time, and typ at+jwt; checked before the runs: $OPA_CHECK"
  fi
  echo "- server CPU: utime + stime of the server process from /proc/PID/stat around the measured run, divided by its requests (CLK_TCK $CLK_TCK); RSS: VmRSS at the end of the run"
  echo
  BEFORE_COL="" BEFORE_SEP=""
  if [[ -n ${BEFORE_REF:-} ]]; then BEFORE_COL=" ÷ usher@before |" BEFORE_SEP="---:|"; fi
  echo "| scenario | runs | requests | RPS sat | p50 ms sat | p99 ms sat | server CPU µs/req |$BEFORE_COL × trivial | OPA ÷ this | p50 ms @$RATE | p99 ms @$RATE | CPU µs/req @$RATE | RSS MiB |"
  echo "|---|---:|---:|---:|---:|---:|---:|$BEFORE_SEP---:|---:|---:|---:|---:|---:|"
  for e in "${ENTRIES[@]}"; do
    sc=${e%%:*}
    cpu=$(cpu_of "$e")
    base=$TRIVIAL_CPU
    star=""
    if [[ ${S_KIND[$sc]} == opa || ${S_KIND[$sc]} == trivial-http ]]; then
      base=$TRIVIAL_HTTP_CPU star=" (HTTP)"
    fi
    x=$(ratio "$cpu" "$base")
    [[ $x != "—" ]] && x="$x$star"
    vs="—"
    [[ $sc == distinct ]] && vs=$(ratio "$OPA_CPU" "$cpu")
    pb=""
    if [[ -n $BEFORE_COL ]]; then
      pb=" — |"
      [[ $e == *:usher ]] && pb=" $(paired "$e" "$sc:before") |"
    fi
    echo "| $(label "$e") | $(runs_of "$e") | $(fmt %.0f "$(med "$e" sat 4)") | $(fmt %.0f "$(med "$e" sat 5)") | $(fmt %.3f "$(med "$e" sat 6)") | $(fmt %.3f "$(med "$e" sat 7)") | $(fmt %.1f "$cpu") |$pb $x | $vs | $(fmt %.3f "$(med "$e" rate 6)") | $(fmt %.3f "$(med "$e" rate 7)") | $(fmt %.1f "$(med "$e" rate 8)") | $(fmt %.1f "$(med "$e" sat 9)") |"
  done
  echo
  echo "In-process floor (per verification): $FLOOR_NOTE"
  if [[ $DISTINCT_MILLION == 1 ]]; then
    echo
    echo "RSS under distinct tokens (\`benchcheck flood\`: EdDSA tokens signed on the fly, each new, at most $MILLION_TOKENS in at most $MILLION_SECONDS s, -c $C; VmRSS sampled every second):"
    echo
    echo "| server | tokens sent | seconds | RSS MiB idle | at 10 % of them | at 25 % | at 50 % | at 75 % | at the end | peak (VmHWM) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for target in "${TARGETS[@]}"; do
      m=${MILLION[$target]:-}
      name=usher
      [[ $target == before ]] && name=usher@before
      if [[ -z $m ]]; then
        echo "| $name | failed | | | | | | | | |"
        continue
      fi
      IFS=$'\t' read -r sent secs idle q10 q25 athalf q75 end hwm <<<"$m"
      echo "| $name | $sent | $secs | $(MiB "$idle") | $(MiB "$q10") | $(MiB "$q25") | $(MiB "$athalf") | $(MiB "$q75") | $(MiB "$end") | $(MiB "$hwm") |"
    done
  fi
  echo
  echo "Goals (ratios of this run):"
  echo
  for target in "${TARGETS[@]}"; do
    name=usher
    [[ $target == before ]] && name=usher@before
    echo "- **$name**"
    hit=$(cpu_of "hit:$target")
    echo "  - cache hit ≤ 1.2 × trivial CPU/request: $(awk -v a="$hit" -v b="$TRIVIAL_CPU" 'BEGIN {
      if (a == "—" || b == "—" || b <= 0) { print "not measured"; exit }
      printf "%.1f µs vs %.1f µs (%.2f ×, bound %.1f µs): %s", a, b, a / b, 1.2 * b, (a <= 1.2 * b ? "met" : "NOT met") }')$(awk -v a="$hit" -v b="$TRIVIAL_CPU" -v s="$(cpu_of trivial-same:trivial-same)" -v n="${RESPONSE_BYTES:-?}" 'BEGIN {
      if (a == "—" || b == "—" || s == "—") exit
      printf "; the trivial server answering usher'"'"'s own %s-byte response: %.1f µs (%.2f × trivial; the hit is %.2f × that)", n, s, s / b, a / s }')"
    dist=$(cpu_of "distinct:$target")
    echo "  - uncached RS256 ≤ trivial + 1.3 × RS256 floor: $(awk -v a="$dist" -v t="$TRIVIAL_CPU" -v f="${FLOOR_US[RS256]:-—}" 'BEGIN {
      if (a == "—" || t == "—") { print "not measured"; exit }
      if (f == "—") { printf "%.1f µs (floor not measured)", a; exit }
      b = t + 1.3 * f; printf "%.1f µs vs %.1f + 1.3 × %.1f = %.1f µs (trivial + %.1f µs = %.2f × floor): %s", a, t, f, b, a - t, (a - t) / f, (a <= b ? "met" : "NOT met") }')"
    for alg in ES256 EdDSA; do
      sc=es256
      [[ $alg == EdDSA ]] && sc=eddsa
      c=$(cpu_of "$sc:$target")
      [[ $c == "—" || -z ${FLOOR_US[$alg]:-} ]] && continue
      echo "  - for reference, uncached $alg ≤ trivial + 1.3 × $alg floor: $(awk -v a="$c" -v t="$TRIVIAL_CPU" -v f="${FLOOR_US[$alg]}" 'BEGIN {
        b = t + 1.3 * f; printf "%.1f µs vs %.1f µs: %s", a, b, (a <= b ? "met" : "NOT met") }')"
    done
    echo "  - ≥ 4 × less server CPU per uncached RS256 validation than OPA: $(awk -v a="$dist" -v o="$OPA_CPU" 'BEGIN {
      if (a == "—" || o == "—" || a <= 0) { print "not measured (OPA=0 or opa not in SCENARIOS)"; exit }
      printf "OPA %.1f µs / usher %.1f µs = %.2f ×: %s", o, a, o / a, (o / a >= 4 ? "met" : "NOT met") }')"
    p99=$(med "hitmiss:$target" rate 7)
    echo "  - p99 ≤ 2 ms at $RATE RPS for the hit/miss mix (hitmiss)$([[ $RATE != 5000 ]] && echo ", RATE is not the goal's 5000"): $(awk -v p="$p99" -v t="$(med trivial:trivial rate 7)" 'BEGIN {
      if (p == "—") { print "not measured (hitmiss not in SCENARIOS and RATE_SCENARIOS)"; exit }
      printf "%.3f ms%s: %s", p, (t == "—" ? "" : sprintf(" (the trivial server at the same rate: %.3f ms)", t)), (p <= 2 ? "met" : "NOT met") }')"
    m=${MILLION[$target]:-}
    if [[ -z $m ]]; then
      echo "  - RSS bounded by the configured caches under 1 M distinct tokens: not measured$([[ $DISTINCT_MILLION != 1 ]] && echo " (DISTINCT_MILLION=0)")"
    else
      IFS=$'\t' read -r sent secs idle q10 q25 athalf q75 end hwm <<<"$m"
      echo "  - RSS bounded by the configured caches under 1 M distinct tokens: $(awk -v sent="$sent" -v idle="$idle" -v half="$athalf" -v end="$end" -v hwm="$hwm" -v cb="$CACHE_MAX_BYTES" -v want="$MILLION_TOKENS" 'BEGIN {
        ok = end <= 1.10 * half + 8192
        printf "%d tokens%s; RSS %.1f MiB at half, %.1f MiB at the end (%+.1f %%), peak − idle (caches empty) %.1f MiB vs cache_max_bytes %.1f MiB: %s",
          sent, (sent < want ? " (fewer than " want ": time bound)" : ""), half / 1024, end / 1024, (half > 0 ? 100 * (end - half) / half : 0),
          (hwm - idle) / 1024, cb / 1048576, (ok ? "met (second half: within 10 % + 8 MiB)" : "NOT met (RSS grew by more than 10 % + 8 MiB in the second half)") }')"
    fi
  done
  if ((${#PROFILED[@]})); then
    echo
    echo "Where the CPU goes (PROFILE=1: one more server process per scenario, \`go tool pprof\` CPU profile of $PROFILE_SECONDS s at saturation, -c $C; cumulative share of the samples, overlapping, and that share of the scenario's CPU/request above; listings in \`$(basename "$PROFILE_DIR")/SCENARIO.txt\`, profiles in \`SCENARIO.pprof\`):"
    echo
    row="| under |" sep="|---|"
    for sc in "${PROFILED[@]}"; do row+=" $sc |" sep+="---:|"; done
    echo "$row"
    echo "$sep"
    for g in "${PROFILE_GROUPS[@]}"; do
      row="| ${g%%|*} |"
      for sc in "${PROFILED[@]}"; do
        all=$TMP/profile-$sc.all
        key="$sc:${S_KIND[$sc]}"
        [[ ${S_KIND[$sc]} == usher ]] && key="$sc:usher"
        row+=" $(awk -v p="$(profile_share "$all" "${g#*|}")" -v c="$(cpu_of "$key")" 'BEGIN {
          if (c == "—") printf "%.1f %%", p; else printf "%.1f %% (%.1f µs)", p, p * c / 100 }') |"
      done
      echo "$row"
    done
  fi
  echo
  echo "Runs (each row one server process; CPU µs/req, RSS MiB at its end):"
  echo
  echo "| scenario | mode | rep | requests | RPS | p50 ms | p99 ms | CPU µs/req | RSS MiB | statuses |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
  for e in "${ENTRIES[@]}"; do
    awk -F'\t' -v k="$e" '$1 == k' "$TMP/runs.tsv" | sort -t$'\t' -k2,2r -k3,3n |
      while IFS=$'\t' read -r key mode rep count rps p50 p99 cpu rss statuses errors end; do
        echo "| $(label "$key") | $mode | $rep | $count | $rps | $p50 | $p99 | $cpu | $rss | $statuses |"
      done
  done
  echo
  echo "Verdicts (checked before the runs, on a server process of their own: the first $CHECK_ENTRIES entries of each file):"
  echo
  echo "| server | file | entries | verdicts | check |"
  echo "|---|---|---:|---|---|"
  for r in "${VERDICT_ROWS[@]}"; do
    IFS=$'\t' read -r target file entries dist check <<<"$r"
    echo "| $([[ $target == before ]] && echo usher@before || echo usher) | $file | $entries | $dist | $check |"
  done
  if ((${#NOTES[@]})); then
    echo
    echo "Notes:"
    echo
    for n in "${NOTES[@]}"; do echo "- $n"; done
  fi
  if ((${#BAD[@]})); then
    echo
    echo "Problems:"
    echo
    for b in "${BAD[@]}"; do echo "- $b"; done
  fi
} >"$OUT"

cat "$OUT"
say "wrote $OUT in $(elapsed)"
((${#BAD[@]} == 0)) || die "${BAD[*]}"
