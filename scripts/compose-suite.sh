#!/usr/bin/env bash
# The TP's scenarios (parts A to F, and the network faults) on the compose backend, as CI runs them.
#
#   scripts/compose-suite.sh [pytest args...]
#
# CHAOSLAB_IMAGES=local (the default) builds local stand-ins for the official images
# (scripts/build-local-images.sh: for machines that reach no container registry);
# CHAOSLAB_IMAGES=official uses postgres:16, redis:7 and haproxy:2.9 as they are on the
# engine (pull them first: docker compose --env-file .env.example pull).
# The engine is started if none answers (scripts/docker-engine.sh). Results go to
# reports/junit-compose.xml and reports/results-compose.json, beside the local suite's;
# Patroni's topology runs next (reports/junit-compose-patroni.xml, results-compose-patroni.json,
# its output in reports/compose-patroni.log); beside them, the grader on whole submissions
# (reports/junit-submissions.xml, results-submissions.json, its output in
# reports/submissions.log), then Sentinel's topology (reports/junit-compose-sentinel.xml,
# results-compose-sentinel.json).
set -euo pipefail
cd "$(dirname "$0")/.."
images=${CHAOSLAB_IMAGES:-local}
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

scripts/setup.sh
if [ "$images" = local ]; then
  scripts/docker-engine.sh install
fi
# An engine this script starts is stopped again at the end: a run leaves nothing running.
if ! scripts/docker-engine.sh status 2>/dev/null; then
  trap 'scripts/docker-engine.sh stop' EXIT
fi
scripts/docker-engine.sh start

if [ "$images" = local ]; then
  started=$(date +%s)
  scripts/build-local-images.sh
  echo "[compose-suite] local images ready in $(elapsed "$started")"
  set -a
  # shellcheck disable=SC1091  # plain VAR=value lines
  . docker/local-images.env
  set +a
fi

# The compose file itself must validate, with the example credentials.
compose=(docker compose)
docker compose version >/dev/null 2>&1 || compose=(docker-compose)
"${compose[@]}" --env-file .env.example -f docker-compose.yml config -q
"${compose[@]}" --env-file .env.example -f docker-compose.yml --profile api config -q
"${compose[@]}" --env-file .env.example -f docker-compose.yml --profile sentinel config -q
"${compose[@]}" --env-file .env.example -f docker-compose.yml --profile patroni config -q
"${compose[@]}" --env-file .env.example -f docker-compose.yml --profile faults config -q
if [ "$images" != local ]; then
  # The Patroni image is the official postgres image plus Patroni (docker/patroni/Dockerfile);
  # the API's image also runs the fault proxy of every compose lab.
  started=$(date +%s)
  "${compose[@]}" --env-file .env.example -f docker-compose.yml --profile patroni build pg-1
  "${compose[@]}" --env-file .env.example -f docker-compose.yml --profile api build api
  echo "[compose-suite] Patroni and API images built in $(elapsed "$started")"
fi

# Three pytest runs in two streams, never more than two at once:
#   the scenarios, then Patroni's topology (in the background once the scenarios are done);
#   the grader on whole submissions, then Sentinel's topology.
# Submissions publish the brief's ports, so they are graded one after another; the lab's own
# compose runs never do (each reserves ports of its own), so they run beside the grading.
# With three runs side by side, Patroni's rejoin in test_leader_node_lost[async] once missed
# its 90 s deadline (four fresh clones, README "Where the time goes"): Patroni only ever runs
# beside one other run. A background run's output goes to its log, printed once it is over.
graded_started=$(date +%s)
# A script's background job starts with Ctrl-C ignored: env gives it back, so that Ctrl-C
# reaches every run as it reaches the foreground one, and all clean up before this script ends.
env --default-signal=INT .venv/bin/python -m pytest --backend compose -m submissions \
  --junitxml=reports/junit-submissions.xml --results-file=reports/results-submissions.json "$@" \
  >reports/submissions.log 2>&1 &
grading=$!
patroni=
stop_runs() {   # (`|| true`: under set -e, a run's own non-zero status would end the trap before its exit.)
  [ -z "${2:-}" ] || kill "-$2" "$grading" ${patroni:+"$patroni"} 2>/dev/null || true
  wait "$grading" || true
  [ -z "$patroni" ] || wait "$patroni" || true
  exit "$1"
}
trap 'stop_runs 130' INT
trap 'stop_runs 143 TERM' TERM

# Its own wall time, to the report it wrote last (this script may wait for it later).
run_time() {
  local ended
  ended=$(stat -c %Y "$2" 2>/dev/null || date +%s)
  [ "$ended" -ge "$1" ] || ended=$(date +%s)
  echo "$((ended - $1))s"
}
# Arguments that select nothing in a run (-k ...) are not its failure (5: nothing collected).
nothing_selected_is_ok() { if [ "$1" -eq 5 ] && [ "$2" -gt 0 ]; then echo 0; else echo "$1"; fi; }

started=$(date +%s)
status=0
# Patroni's and Sentinel's network scenarios run with their topologies below, once.
.venv/bin/python -m pytest --backend compose \
  -m "(setup or replication or haproxy or cache or resilience or failover or network) and not patroni and not sentinel" \
  --junitxml=reports/junit-compose.xml --results-file=reports/results-compose.json "$@" || status=$?
echo "[compose-suite] scenarios on the compose backend: exit $status in $(elapsed "$started")"

patroni_started=$(date +%s)
env --default-signal=INT .venv/bin/python -m pytest --backend compose -m patroni \
  --junitxml=reports/junit-compose-patroni.xml --results-file=reports/results-compose-patroni.json "$@" \
  >reports/compose-patroni.log 2>&1 &
patroni=$!

graded=0
wait "$grading" || graded=$?
echo "[compose-suite] graded submissions (references and mutants), beside the scenarios:"
cat reports/submissions.log
echo "[compose-suite] graded submissions: exit $graded in $(run_time "$graded_started" reports/junit-submissions.xml)"

started=$(date +%s)
sentinel=0
.venv/bin/python -m pytest --backend compose -m sentinel \
  --junitxml=reports/junit-compose-sentinel.xml --results-file=reports/results-compose-sentinel.json "$@" \
  || sentinel=$?
echo "[compose-suite] Sentinel's topology on the compose backend: exit $sentinel in $(elapsed "$started")"

patroni_status=0
wait "$patroni" || patroni_status=$?
trap - INT TERM
echo "[compose-suite] Patroni's topology on the compose backend, beside the grading and Sentinel's:"
cat reports/compose-patroni.log
echo "[compose-suite] Patroni's topology: exit $patroni_status in $(run_time "$patroni_started" reports/junit-compose-patroni.xml)"

for run_status in "$(nothing_selected_is_ok "$patroni_status" $#)" "$(nothing_selected_is_ok "$sentinel" $#)" \
                  "$(nothing_selected_is_ok "$graded" $#)"; do
  [ "$status" -ne 0 ] || status=$run_status
done
exit "$status"
