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
# the bonus topologies (Redis Sentinel, Patroni) run next, in a pytest of their own, to
# reports/junit-compose-bonus.xml and reports/results-compose-bonus.json; the grader on
# whole submissions runs beside both (reports/junit-submissions.xml,
# reports/results-submissions.json, its output in reports/submissions.log).
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

# The grader on whole submissions: the references get 20/20, each mutant loses exactly its
# checks. Submissions publish the brief's ports, so they are graded one after another; the
# lab's own compose runs never do (each reserves ports of its own), so the grading runs
# beside them, its output kept in reports/submissions.log and printed once it is over.
graded_started=$(date +%s)
# A script's background job starts with Ctrl-C ignored: env gives it back, so that Ctrl-C
# reaches the grading as it reaches the scenarios, and both clean up before this script ends.
env --default-signal=INT .venv/bin/python -m pytest --backend compose -m submissions \
  --junitxml=reports/junit-submissions.xml --results-file=reports/results-submissions.json "$@" \
  >reports/submissions.log 2>&1 &
grading=$!
# (`|| true`: under set -e, the grading's own non-zero status would end the trap before its exit.)
trap 'wait "$grading" || true; exit 130' INT
trap 'kill -TERM "$grading" 2>/dev/null; wait "$grading" || true; exit 143' TERM

started=$(date +%s)
status=0
# Patroni's and Sentinel's network scenarios run with the bonus topologies below, once. The
# bonus runs after the scenarios, not beside them too: with three runs side by side, Patroni's
# rejoin in test_leader_node_lost[async] missed its 90 s deadline once in four runs.
.venv/bin/python -m pytest --backend compose \
  -m "(setup or replication or haproxy or cache or resilience or failover or network) and not patroni and not sentinel" \
  --junitxml=reports/junit-compose.xml --results-file=reports/results-compose.json "$@" || status=$?
echo "[compose-suite] scenarios on the compose backend: exit $status in $(elapsed "$started")"

started=$(date +%s)
bonus=0
.venv/bin/python -m pytest --backend compose -m "sentinel or patroni" \
  --junitxml=reports/junit-compose-bonus.xml --results-file=reports/results-compose-bonus.json "$@" || bonus=$?
echo "[compose-suite] bonus topologies (Sentinel, Patroni) on the compose backend: exit $bonus in $(elapsed "$started")"
# Arguments that select no bonus scenario (-k ...) are not a failure of this half (5: nothing collected).
if [ "$bonus" -eq 5 ] && [ $# -gt 0 ]; then bonus=0; fi

graded=0
wait "$grading" || graded=$?
trap - INT TERM
echo "[compose-suite] graded submissions (references and mutants), beside the scenarios above:"
cat reports/submissions.log
# Its own wall time, to the report it wrote last (the wait above also waited for the bonus).
graded_ended=$(stat -c %Y reports/junit-submissions.xml 2>/dev/null || date +%s)
[ "$graded_ended" -ge "$graded_started" ] || graded_ended=$(date +%s)
echo "[compose-suite] graded submissions: exit $graded in $((graded_ended - graded_started))s"
if [ "$graded" -eq 5 ] && [ $# -gt 0 ]; then graded=0; fi
[ "$status" -ne 0 ] || status=$bonus
[ "$status" -ne 0 ] || status=$graded
exit "$status"
