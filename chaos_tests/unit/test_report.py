"""The French report from a results file, its plots, and the pytest plugin that writes that file."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from chaoslab import plots, report
from chaoslab.results import load_results

pytest_plugins = ["pytester"]


def _report_text(tmp_path: Path, results: dict) -> str:
    """The report written from ``results``, as a results file on disk."""
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return report.write_report(path, tmp_path / "report.md").read_text(encoding="utf-8")


def _test(nodeid, markers, outcome="passed", param_id=None, duration=1.0, attachments=None, **figures):
    return {
        "nodeid": nodeid,
        "name": nodeid.split("::")[-1],
        "file": nodeid.split("::")[0],
        "param_id": param_id,
        "markers": markers,
        "outcome": outcome,
        "failed_phase": None if outcome == "passed" else "call",
        "message": None,
        "duration_call_s": duration,
        "duration_total_s": duration + 0.5,
        "measurements": {k: {"value": v, "unit": ""} for k, v in figures.items()},
        "attachments": attachments or {},
        "properties": [[k, v] for k, v in figures.items()],
    }


@pytest.fixture
def results_file(tmp_path: Path) -> Path:
    data_dir = tmp_path / "reports" / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "latency.json").write_text(json.dumps({
        "cache_off": [4.1, 4.4, 5.0, 5.2, 6.8, 9.9],
        "cache_warm": [0.9, 1.0, 1.1, 1.2, 1.4, 2.2],
    }))
    (data_dir / "timeline.json").write_text(json.dumps({
        "bucket_s": 0.1,
        "buckets": [{"t": round(i * 0.1, 1), "ok": 0 if 10 <= i < 25 else 20,
                     "fail": 18 if 10 <= i < 25 else 0, "unknown": 2 if i == 10 else 0}
                    for i in range(40)],
        "events": [{"name": "fault", "t": 1.0}, {"name": "promote", "t": 1.9}, {"name": "switch", "t": 2.4}],
    }))
    tests = [
        _test("chaos_tests/test_a_setup.py::test_up", ["setup"], duration=0.2),
        _test("chaos_tests/test_c_haproxy.py::test_down", ["haproxy"], duration=3.0,
              haproxy_mark_down_ms=1234.4, haproxy_reroute_ms=321.5),
        _test("chaos_tests/test_b_replication.py::test_b2", ["replication"], replication_delay_ms=3.21),
        _test("chaos_tests/test_b_replication.py::test_other", ["replication"], outcome="failed"),
        _test("chaos_tests/test_d_cache.py::test_before_after", ["cache"], duration=7.0,
              attachments={"latency_samples": "reports/data/latency.json"},
              get_p50_ms_cache_off=5.1, get_p95_ms_cache_off=9.87, get_p50_ms_cache_warm=1.05,
              get_p95_ms_cache_warm=2.2, db_reads_cache_off=500, db_reads_cache_warm=0,
              requests_measured=500),
        _test("chaos_tests/test_d_cache.py::test_ttl_in_redis_is_in_the_briefs_range", ["cache"], cache_ttl_s=600,
              outcome="failed"),
        _test("chaos_tests/test_d_cache.py::test_put_invalidates_the_key", ["cache"]),
        _test("chaos_tests/test_d_cache.py::test_race[off]", ["cache"], param_id="off",
              race_stale_window_ms=59876.4, race_guard="off", ttl_setting_s=4),
        _test("chaos_tests/test_d_cache.py::test_race[on]", ["cache"], param_id="on",
              race_stale_window_ms=0, race_guard="on", ttl_setting_s=4),
        _test("chaos_tests/test_e_resilience.py::test_redis[pause]", ["resilience"], param_id="pause",
              failed_reads=0, reads_total=200, p50_ms_breaker_open=3.3, p50_ms_no_cache=4.4),
        _test("chaos_tests/test_e_resilience.py::test_write[pause]", ["resilience"], param_id="pause",
              put_during_outage_ms=101.5),
        _test("chaos_tests/test_e_resilience.py::test_replica[error]", ["resilience"], param_id="error",
              replica_policy="error", status_codes="503:50"),
        _test("chaos_tests/test_f_failover.py::test_failover[kill-runtime_api]", ["failover"],
              param_id="kill-runtime_api", duration=20.0,
              attachments={"timeline": "reports/data/timeline.json"}, failover_kind="manual",
              fault="kill", switch="runtime_api", rto_s=1.42, time_to_new_primary_s=1.1, write_recovery_s=0.32,
              longest_write_outage_s=1.5, lost_writes=3, unknown_writes=2, acked_writes=917, synchronous="off",
              failed_but_present_writes=0, reads_judged=100, stale_reads=0, failed_reads=0),
        _test("chaos_tests/test_f_failover.py::test_failover[stop-restart]", ["failover"],
              param_id="stop-restart", duration=30.0, failover_kind="manual",
              fault="stop", switch="restart", rto_s=4.75, time_to_new_primary_s=2.5, write_recovery_s=2.25,
              longest_write_outage_s=4.8, lost_writes=0, unknown_writes=1, acked_writes=800, synchronous="off",
              failed_but_present_writes=0, reads_judged=50, stale_reads=0, failed_reads=0),
        _test("chaos_tests/test_patroni.py::test_leader_node_lost[async]", ["patroni"], param_id="async",
              failover_kind="automatic", fault="SIGKILL du nœud", synchronous="off", rto_s=11.5,
              time_to_new_primary_s=10.5, write_recovery_s=1.0, longest_write_outage_s=11.6, lost_writes=0,
              unknown_writes=0, acked_writes=300),
        _test("chaos_tests/test_patroni.py::test_planned_switchover[async]", ["patroni"], param_id="async",
              failover_kind="planned", fault="bascule planifiée", synchronous="off", write_recovery_s=0.9,
              longest_write_outage_s=3.1, lost_writes=0, unknown_writes=0, acked_writes=250),
        _test("chaos_tests/test_patroni.py::test_old_primary_rejoins_with_pg_rewind[async]", ["patroni"],
              param_id="async", rewound_writes=20),
        _test("chaos_tests/test_x_bonus.py::test_stampede", ["stampede"]),
    ]
    results = {
        "schema": 1,
        "run": {"backend": "local", "started_at": "2025-11-26T10:00:00+01:00", "wall_seconds": 98.76,
                "python": "3.11.2", "rootdir": str(tmp_path), "cache_ttl_seconds": 60,
                "versions": {"postgresql": "15.14", "redis": "7.0.15", "haproxy": "2.6.12"}},
        "summary": {},
        "tests": tests,
        "grade": {},
    }
    path = tmp_path / "reports" / "results.json"
    path.write_text(json.dumps(results))
    return path


def test_report_uses_the_figures_of_the_run(results_file: Path, tmp_path: Path):
    out = report.write_report(results_file, tmp_path / "report.md")
    text = out.read_text(encoding="utf-8")
    for expected in (
        "15.14", "7.0.15", "2.6.12", "3.11.2", "98,8 s", "local",      # header
        "3,21 ms", "1234 ms", "321,5 ms",                                  # replication, haproxy
        "5,1 ms", "1,05 ms", "9,87 ms", "| Lectures SQL d'un produit | 500 | 0 | −100 % |",   # cache
        "| GET p50 | 5,1 ms | 1,05 ms | −79 % |",
        "**TTL : 600 s**, lu dans Redis, **hors** de la fourchette 30–120 s",   # the TTL as measured
        "(clé absente de Redis juste après le `PUT` : réussi)",
        "4 s", "0 ms", "59876 ms",                                         # race off/on; ttl setting
        "0 / 200", "3,3 ms", "503:50", "101,5 ms",                         # resilience
        "1,42 s", "4,75 s", "917", "`failover[kill-runtime_api]`", "runtime_api",    # failover
        "| `leader_node_lost[async]` | SIGKILL du nœud | off | 10,5 s | 1 s | 11,5 s | 11,6 s |",
        "| `planned_switchover[async]` | bascule planifiée | off | sans objet | 0,9 s | sans objet | 3,1 s |",
        "20 écriture(s) effacées par pg_rewind",
        "bascule à la main 3,08 s (2 mesures), failover Patroni après une panne 11,5 s (1 mesure)",
        "médianes de cette exécution : `runtime_api` 0,32 s ; `restart` 2,25 s (la plus rapide ici : `runtime_api`)",
        "en asynchrone : 3 perdue(s) sur 2267 acquittée(s)",
        "efface à dessein 20 écriture(s)",
        "```mermaid", "│  HAProxy   │", "product:{id}",
        "1/1 tests réussis",                                                 # bonus
    ):
        assert expected in text, expected
    # every figure shown is defined under its table, once
    assert text.count("- **RTO** :") == 1
    # figures the run did not measure are said to be missing, never invented
    assert "non mesuré dans cette exécution" in text
    assert "D4 (modifier puis relire aussitôt) : non mesuré dans cette exécution" in text
    assert text.count("## ") >= 9


def test_report_makes_and_links_the_plots(results_file: Path, tmp_path: Path):
    out = report.write_report(results_file, tmp_path / "report.md")
    text = out.read_text(encoding="utf-8")
    plots_dir = results_file.parent / "plots"
    latency = plots_dir / "latency.png"
    timeline = plots_dir / "timeline-failover-kill-runtime_api.png"
    for png in (latency, timeline):
        assert png.exists() and png.stat().st_size > 1000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(reports/plots/latency.png)" in text
    assert "[png](reports/plots/timeline-failover-kill-runtime_api.png)" in text


def test_report_of_an_empty_run_says_everything_is_missing(tmp_path: Path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema": 1, "run": {"backend": "compose"}, "tests": []}))
    text = report.write_report(path, tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert text.count("non mesuré dans cette exécution") >= 10
    assert "non noté dans cette exécution" in text
    assert "non exécuté" in text
    assert not (tmp_path / "plots").exists()


def test_report_cli(results_file: Path, tmp_path: Path, capsys):
    out = tmp_path / "cli" / "report.md"
    assert report.main(["--results", str(results_file), "--out", str(out),
                        "--plots-dir", str(tmp_path / "cli" / "png")]) == 0
    assert "(png/latency.png)" in out.read_text(encoding="utf-8")
    assert "rapport écrit" in capsys.readouterr().out


def test_plots_accept_mappings(tmp_path: Path):
    png = plots.latency_plot({"cache_off": [1, 2, 3], "cache_warm": [0.5]}, tmp_path / "l.png")
    assert png.stat().st_size > 0
    png = plots.timeline_plot({"bucket_s": 0.5, "buckets": [], "events": []}, tmp_path / "t.png")
    assert png.stat().st_size > 0
    with pytest.raises(ValueError):
        plots.latency_plot({"cache_off": []}, tmp_path / "none.png")


# --- the pytest plugin ----------------------------------------------------

INNER_TESTS = '''
import pytest

@pytest.mark.replication
def test_measured_then_failed(measure, tmp_path):
    measure("replication_delay_ms", 12.5, "ms")
    data = tmp_path.parent / "timeline.json"
    data.write_text("{}")
    measure.attach("timeline", data)
    assert False, "boom after measuring"

@pytest.mark.replication
def test_passes(measure):
    measure("replication_delay_ms", 3, "ms")

@pytest.mark.cache
@pytest.mark.parametrize("guard", ["off", "on"])
def test_param(measure, guard, run_info):
    run_info("cache_ttl_seconds", 60)
    run_info.version("redis", "7.0.15")
    measure("race_guard", guard)

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")

@pytest.mark.resilience
def test_teardown_error(broken_teardown, measure):
    measure("responses_total", 10)

@pytest.fixture
def broken_setup():
    raise RuntimeError("setup broke")

@pytest.mark.failover
def test_setup_error(broken_setup):
    pass

@pytest.mark.setup
def test_skipped():
    pytest.skip("no docker engine here")

def test_unmarked():
    pass
'''

INNER_CONFTEST = '''
pytest_plugins = ["chaoslab.pytest_plugin"]

def pytest_chaoslab_run_info(config):
    return {"versions": {"postgresql": "15.14"}, "from_hook": True}
'''

INNER_INI = '''
[pytest]
junit_family = xunit1
markers =
    setup: a
    haproxy: c
    replication: b
    cache: d
    resilience: e
    failover: f
'''


def test_plugin_writes_results_and_junit_and_grades_nothing(pytester: pytest.Pytester):
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.runpytest("--strict-markers", "--junitxml=out/junit.xml", "--results-file=out/results.json")
    result.assert_outcomes(passed=5, failed=1, errors=2, skipped=1)
    result.stdout.fnmatch_lines(["*scénarios les plus lents*"])
    assert "barème" not in result.stdout.str(), "points are the grader's alone, not the tests' outcomes"

    results = load_results(pytester.path / "out" / "results.json")
    tests = {t["nodeid"].split("::")[-1]: t for t in results["tests"]}
    failed = tests["test_measured_then_failed"]
    assert failed["outcome"] == "failed" and failed["failed_phase"] == "call"
    assert "boom after measuring" in failed["message"]
    assert failed["measurements"]["replication_delay_ms"] == {"value": 12.5, "unit": "ms"}
    assert failed["markers"] == ["replication"]
    assert failed["attachments"]["timeline"].endswith("timeline.json")
    assert tests["test_passes"]["outcome"] == "passed"
    assert tests["test_param[on]"]["param_id"] == "on"
    assert tests["test_param[on]"]["measurements"]["race_guard"]["value"] == "on"
    teardown = tests["test_teardown_error"]
    assert (teardown["outcome"], teardown["failed_phase"]) == ("error", "teardown")
    assert teardown["measurements"]["responses_total"]["value"] == 10
    assert (tests["test_setup_error"]["outcome"], tests["test_setup_error"]["failed_phase"]) == ("error", "setup")
    assert tests["test_skipped"]["outcome"] == "skipped"
    assert "no docker engine" in tests["test_skipped"]["message"]
    assert tests["test_unmarked"]["markers"] == []
    assert all(t["duration_total_s"] >= t["duration_call_s"] >= 0 for t in results["tests"])

    run = results["run"]
    assert run["backend"] == "local"
    assert run["cache_ttl_seconds"] == 60 and run["from_hook"] is True
    assert run["versions"]["redis"] == "7.0.15" and run["versions"]["postgresql"] == "15.14"
    assert run["wall_seconds"] >= 0 and run["started_at"]
    assert results["summary"] == {"total": 8, "passed": 4, "failed": 1, "error": 2, "skipped": 1}
    assert "grade" not in results

    root = ET.parse(pytester.path / "out" / "junit.xml").getroot()
    suite = root.find("testsuite")
    suite_props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    assert suite_props["backend"] == "local" and "grade" not in suite_props
    case = next(c for c in suite.iter("testcase") if c.get("name") == "test_measured_then_failed")
    case_props = {p.get("name"): p.get("value") for p in case.findall("properties/property")}
    assert case_props["replication_delay_ms"] == "12.5"
    assert case_props["attachment:timeline"].endswith("timeline.json")
    assert case.find("failure") is not None


def test_plugin_default_results_path_and_no_junit(pytester: pytest.Pytester):
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_one="def test_ok(measure):\n    measure('x', float('nan'))\n")
    result = pytester.runpytest("-p", "no:junitxml")
    result.assert_outcomes(passed=1)
    results = json.loads((pytester.path / "reports" / "results.json").read_text())
    assert results["tests"][0]["measurements"]["x"]["value"] is None


def test_plugin_collect_only_writes_nothing(pytester: pytest.Pytester):
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_one="def test_ok():\n    pass\n")
    pytester.runpytest("--collect-only")
    assert not (pytester.path / "reports" / "results.json").exists()


def test_report_shows_the_bonus_figures(tmp_path: Path):
    results = {"run": {}, "tests": [
        _test("chaos_tests/test_stampede.py::test_cold_key[on]", ["stampede"], param_id="on",
              concurrent_gets=150, db_reads_cold_key_protection_on=1),
        _test("chaos_tests/test_stampede.py::test_cold_key[off]", ["stampede"], param_id="off",
              concurrent_gets=150, db_reads_cold_key_protection_off=137),
        _test("chaos_tests/test_sentinel.py::test_master_failover_under_load[kill]", ["sentinel"], param_id="kill",
              fault="kill", sentinel_promotion_s=2.33, cache_hits_resume_s=4.11, failed_reads=0,
              reads_total=1548),
    ]}
    text = _report_text(tmp_path, results)
    assert "| clé froide, GET concurrents, avec protection | 1 |" in text
    assert "| clé froide, GET concurrents, sans protection | 137 |" in text
    assert "| `kill` | 2,33 s | 4,11 s | 0 / 1548 | réussi |" in text


def test_the_report_gives_the_graders_grade_never_one_from_test_outcomes(results_file: Path, tmp_path: Path):
    from chaoslab.grader import outputs, rubric

    results = [rubric.CheckResult(check.id, rubric.PASSED) for check in rubric.CHECKS]
    results[0] = rubric.CheckResult("A1.compose_services", rubric.NOT_RUN,
                                    message="non notable : backend local : aucun docker-compose.yml n'a été lancé")
    grade_file = tmp_path / "grade.json"
    grade_file.write_text(json.dumps(outputs.grade_json(rubric.grade(results), "chaoslab (backend local)")))
    text = report.write_report(results_file, tmp_path / "report.md", grade_path=grade_file).read_text()
    assert "| Note (barème du sujet, par le correcteur) | **19/20** |" in text
    assert "| Docker & lancement | 2/3 |" in text and "| **Total** | **19/20** |" in text
    assert "- `A1.compose_services` (1 pt) : non notable : backend local" in text


def test_report_shows_the_redis_master_cut_off_from_the_sentinels(tmp_path: Path):
    name = "chaos_tests/test_sentinel.py::test_a_master_cut_off_from_the_sentinels_is_replaced_and_its_writes_lost"
    results = {"run": {}, "tests": [
        _test(f"{name}[unguarded]", ["network", "sentinel"], param_id="unguarded", guard="none",
              promoted_after_cut_s=2.21, old_master_acked_after_promotion=291, old_master_refused_writes=0,
              direct_writes_lost=292),
        _test(f"{name}[min_replicas]", ["network", "sentinel"], param_id="min_replicas", outcome="failed",
              guard="min_replicas", promoted_after_cut_s=1.91, old_master_acked_after_promotion=0,
              old_master_refused_writes=290, direct_writes_lost=0),
    ]}
    text = _report_text(tmp_path, results)
    assert "| `none` | 2,21 s | 291 | 0 | 292 | réussi |" in text
    assert "| `min_replicas` | 1,91 s | 0 | 290 | 0 | échoué" in text
    assert "- **écritures acquittées puis perdues** :" in text


def test_report_shows_latency_on_the_sentinels_links(tmp_path: Path):
    name = "chaos_tests/test_sentinel.py::test_latency_on_the_sentinels_links_to_a_healthy_master"
    results = {"run": {}, "tests": [
        _test(f"{name}[below_down_after]", ["network", "sentinel"], param_id="below_down_after",
              sentinel_link_ping_ms=301.7, master_ping_ms_max=0.8),
        _test(f"{name}[above_down_after]", ["network", "sentinel"], param_id="above_down_after",
              sentinel_link_ping_ms=1501.7, master_ping_ms_max=1.2, spurious_failover_after_s=2.24),
    ]}
    text = _report_text(tmp_path, results)
    assert "| `below_down_after` | 301,7 ms | 0,8 ms | sans objet | réussi |" in text
    assert "| `above_down_after` | 1502 ms | 1,2 ms | 2,24 s | réussi |" in text
    assert "- **bascule d'un maître sain après** :" in text
