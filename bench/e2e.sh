#!/usr/bin/env bash
# End-to-end load test: attnrec against the Python peer (bench/peer/app.py) on the same
# catalogue, the same model and real shopper queries, at several concurrency levels.
#
# For each concurrency level, oha sends POST /recommend for a fixed time to attnrec, then to the
# peer. Each request body is one of the distinct queries of the judgments file, picked at random
# per request. The script prints one Markdown table (QPS, p50, p99, errors, 429s, peak RSS, with the
# attnrec/peer ratio) and keeps the raw oha reports and server logs under bench/results/.
#
# Usage: bench/e2e.sh   (from anywhere; paths are relative to the repository root)
# Environment (defaults in brackets):
#   CATALOG        id,title CSV to index and serve [../shared/data/homedepot/products.csv]
#   JUDGMENTS      CSV with a `query` column; its distinct queries are the request bodies
#                  [../shared/data/homedepot/judgments-dev.csv]
#   DATA_DIR       attnrec data directory; indexed from CATALOG when it has no manifest.json
#                  [var/homedepot]
#   BENCH_ATTNREC_BIN  attnrec binary [target/release/attnrec, built with cargo when missing]
#   DURATION       seconds of load per service and level [20]
#   WARMUP         seconds of load at concurrency 8 before the measured levels [5]
#   CONCURRENCY    space-separated concurrency levels ["1 8 32 128"]
#   K              items per request [10]
#   BENCH_ATTNREC_PORT, BENCH_PEER_PORT  loopback ports [18080, 18081]
#   READY_TIMEOUT  seconds to wait for both /ready endpoints; the peer's first start embeds the
#                  whole catalogue [1800]
#   RESULTS_DIR    output directory [bench/results/e2e-<UTC time>]
#   OHA            oha binary to use instead of bench/.tools/bin/oha or one on PATH
# The BENCH_ names avoid the ATTNREC_ prefix because attnrec reads every ATTNREC_* variable as a
# setting and rejects unknown ones at start-up.
#
# All traffic goes to 127.0.0.1. Every wait has a deadline, and both servers are stopped on exit.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"

catalog=${CATALOG:-../shared/data/homedepot/products.csv}
judgments=${JUDGMENTS:-../shared/data/homedepot/judgments-dev.csv}
data_dir=${DATA_DIR:-var/homedepot}
duration=${DURATION:-20}
warmup=${WARMUP:-5}
read -r -a levels <<<"${CONCURRENCY:-1 8 32 128}"
k=${K:-10}
attnrec_port=${BENCH_ATTNREC_PORT:-18080}
peer_port=${BENCH_PEER_PORT:-18081}
ready_timeout=${READY_TIMEOUT:-1800}
results_dir=${RESULTS_DIR:-bench/results/e2e-$(date -u +%Y%m%dT%H%M%SZ)}
oha_version=1.16.0
host=127.0.0.1

fail() {
  echo "error: $*" >&2
  exit 1
}

for file in "$catalog" "$judgments"; do
  [[ -f $file ]] || fail "$file not found; the default is the Home Depot data set in ../shared/data/homedepot, or set CATALOG and JUDGMENTS"
done
[[ $duration =~ ^[0-9]+$ && $duration -gt 0 ]] || fail "DURATION must be a whole number of seconds above 0, not '$duration'"
[[ $warmup =~ ^[0-9]+$ ]] || fail "WARMUP must be a whole number of seconds, not '$warmup'"
for level in "${levels[@]}"; do
  [[ $level =~ ^[0-9]+$ && $level -gt 0 ]] || fail "CONCURRENCY must list whole numbers above 0, not '$level'"
done
mkdir -p "$results_dir"

# --- Tools: oha, the attnrec binary, the model and the peer's venv -------------------------------

oha_is_usable() {
  # This script relies on -Z (one body per line, a random line per request) and on
  # --stats-success-breakdown (latency percentiles of the 2xx responses).
  local help
  help=$("$1" --help 2>/dev/null) || return 1
  [[ $help == *"-Z <BODY_PATH_LINES>"* && $help == *--stats-success-breakdown* ]]
}

find_oha() {
  local candidate
  for candidate in "${OHA:-}" bench/.tools/bin/oha "$(command -v oha || true)"; do
    if [[ -n $candidate && -x $candidate ]] && oha_is_usable "$candidate"; then
      echo "$candidate"
      return
    fi
  done
}

oha=$(find_oha)
if [[ -z $oha ]]; then
  echo "Installing oha $oha_version into bench/.tools (compiles for several minutes)"
  nice -n 19 cargo install --locked oha --version "$oha_version" --root bench/.tools
  oha=bench/.tools/bin/oha
  oha_is_usable "$oha" || fail "$oha lacks -Z or --stats-success-breakdown; set OHA to oha $oha_version or newer"
fi

if [[ -n ${BENCH_ATTNREC_BIN:-} ]]; then
  attnrec=$BENCH_ATTNREC_BIN
  [[ -x $attnrec ]] || fail "BENCH_ATTNREC_BIN=$attnrec is not an executable file"
else
  attnrec=target/release/attnrec
  if [[ ! -x $attnrec ]]; then
    echo "Building attnrec (release; about 15 minutes on 2 cores the first time)"
    cargo build --release --locked
  fi
fi

scripts/fetch-models.sh all-MiniLM-L6-v2
if [[ ! -x bench/.venv/bin/python ]]; then
  bench/setup-peer.sh
fi

if [[ ! -f $data_dir/manifest.json ]]; then
  echo "Indexing $catalog into $data_dir (about 5 minutes for the 54,667 Home Depot products on 2 cores)"
  "$attnrec" index --catalog "$catalog" --data-dir "$data_dir"
fi

# --- Request bodies -------------------------------------------------------------------------------

bodies=$results_dir/bodies.jsonl
python3 - "$judgments" "$k" "$bodies" <<'PY'
import csv, json, sys
judgments, k, output = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(judgments, newline="", encoding="utf-8") as file:
    reader = csv.DictReader(file)
    if "query" not in (reader.fieldnames or []):
        raise SystemExit(f"{judgments} has no 'query' column; its header is {reader.fieldnames}")
    queries = list(dict.fromkeys(row["query"] for row in reader if row["query"].strip()))
if not queries:
    raise SystemExit(f"{judgments} has no non-empty query")
with open(output, "w", encoding="utf-8") as file:
    for query in queries:
        file.write(json.dumps({"query": query, "k": k}) + "\n")
print(f"{len(queries)} distinct queries from {judgments}")
PY

# --- Servers ----------------------------------------------------------------------------------------

attnrec_pid=
peer_pid=

stop_server() {
  local pid=$1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "warning: process $pid did not stop within 10 s of SIGTERM; sending SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

stop_servers() {
  stop_server "$attnrec_pid"
  stop_server "$peer_pid"
}
trap stop_servers EXIT

for port in "$attnrec_port" "$peer_port"; do
  if curl -s -o /dev/null --max-time 2 "http://$host:$port/health"; then
    fail "port $port on $host is already in use; stop that server or set BENCH_ATTNREC_PORT / BENCH_PEER_PORT"
  fi
done

"$attnrec" serve --data-dir "$data_dir" --listen "$host:$attnrec_port" >"$results_dir/attnrec.log" 2>&1 &
attnrec_pid=$!
bench/.venv/bin/python bench/peer/app.py --catalog "$catalog" --host "$host" --port "$peer_port" \
  >"$results_dir/peer.log" 2>&1 &
peer_pid=$!
servers_started=$SECONDS
echo "Started attnrec (pid $attnrec_pid, $host:$attnrec_port) and the peer (pid $peer_pid, $host:$peer_port)"

wait_ready() {
  local name=$1 pid=$2 port=$3 log=$4
  local deadline=$((SECONDS + ready_timeout))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2
      fail "$name (pid $pid) exited before it was ready; its log is $log"
    fi
    if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$host:$port/ready") == 200 ]]; then
      echo "$name is ready $((SECONDS - servers_started)) s after the start"
      return
    fi
    sleep 1
  done
  fail "$name was not ready within $ready_timeout s (READY_TIMEOUT); its log is $log"
}

wait_ready attnrec "$attnrec_pid" "$attnrec_port" "$results_dir/attnrec.log"
wait_ready peer "$peer_pid" "$peer_port" "$results_dir/peer.log"

# Both /ready bodies carry the number of indexed items. A DATA_DIR indexed from another catalogue
# than CATALOG would make the comparison meaningless.
count_items() {
  curl -s --max-time 2 "http://$host:$1/ready" | python3 -c 'import json, sys; print(json.load(sys.stdin)["items"])'
}
attnrec_items=$(count_items "$attnrec_port")
peer_items=$(count_items "$peer_port")
if [[ $attnrec_items != "$peer_items" ]]; then
  fail "attnrec serves $attnrec_items items from $data_dir but the peer serves $peer_items from $catalog; index CATALOG into an empty DATA_DIR"
fi

# --- Memory ----------------------------------------------------------------------------------------

# Prints the named field of /proc/PID/status in KiB (VmHWM: peak RSS, VmRSS: current RSS).
read_memory_kib() {
  awk -v field="$2:" '$1 == field { print $2 }' "/proc/$1/status"
}

# Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0 and later), so each level
# reports its own peak rather than the peak of start-up, when the peer embeds the catalogue.
reset_peak_memory() {
  echo 5 >"/proc/$1/clear_refs" 2>/dev/null || echo "warning: cannot reset the peak RSS of pid $1; VmHWM will include earlier peaks" >&2
}

for name in attnrec peer; do
  pid_var=${name}_pid
  echo "$name RSS when ready: $(($(read_memory_kib "${!pid_var}" VmRSS) / 1024)) MiB" | tee -a "$results_dir/memory.txt"
done

# --- Load -------------------------------------------------------------------------------------------

run_load() {
  local port=$1 concurrency=$2 seconds=$3 report=$4
  # -w waits for requests still in flight at the deadline, so they count as completed rather than
  # as "aborted due to deadline" errors. One oha worker thread leaves the other cores to the server:
  # oha spends microseconds per request, and both services spend milliseconds. timeout bounds the
  # run even if a server stops responding.
  timeout $((seconds + 60)) "$oha" --no-tui --output-format json --stats-success-breakdown \
    --worker-threads 1 -z "${seconds}s" -w -c "$concurrency" -m POST -H 'content-type: application/json' \
    -Z "$bodies" "http://$host:$port/recommend" >"$report" ||
    fail "oha failed or ran past $((seconds + 60)) s against $host:$port at concurrency $concurrency; see $report"
}

if ((warmup > 0)); then
  echo "Warming up both services: ${warmup} s at concurrency 8 each"
  run_load "$attnrec_port" 8 "$warmup" "$results_dir/warmup-attnrec.json"
  run_load "$peer_port" 8 "$warmup" "$results_dir/warmup-peer.json"
fi

printf 'service\tconcurrency\treport\tpeak_rss_kib\trss_kib\n' >"$results_dir/levels.tsv"
for concurrency in "${levels[@]}"; do
  for name in attnrec peer; do
    pid_var=${name}_pid
    port_var=${name}_port
    pid=${!pid_var}
    kill -0 "$pid" 2>/dev/null || fail "$name (pid $pid) has exited; its log is in $results_dir"
    report=$name-c$concurrency.json
    echo "Load: $name, concurrency $concurrency, $duration s"
    reset_peak_memory "$pid"
    run_load "${!port_var}" "$concurrency" "$duration" "$results_dir/$report"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$concurrency" "$report" \
      "$(read_memory_kib "$pid" VmHWM)" "$(read_memory_kib "$pid" VmRSS)" >>"$results_dir/levels.tsv"
  done
done

# --- Report -----------------------------------------------------------------------------------------

{
  echo "$("$attnrec" --version 2>/dev/null || echo "attnrec (version unknown)"), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "$(bench/.venv/bin/python -c 'import torch, sentence_transformers as st; print(f"peer: torch {torch.__version__}, sentence-transformers {st.__version__}")')"
  echo "$("$oha" --version)"
  echo "catalogue $catalog ($(($(wc -l <"$catalog") - 1)) rows), $(wc -l <"$bodies") distinct queries, k=$k"
  echo "$duration s per level, levels: ${levels[*]}; $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) memory"
  echo
  python3 bench/e2e_summary.py "$results_dir"
} | tee "$results_dir/summary.md"
echo
echo "Raw oha reports, server logs and this table are in $results_dir"
