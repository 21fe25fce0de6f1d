"""The TP's marking scheme, computed from outcomes (chaoslab.grading)."""

import pytest

from chaoslab.grading import LAB_MARKERS, MAX_POINTS, NOT_RUN, compute_grade, grade_from_dict


def t(outcome, *markers):
    return {"outcome": outcome, "markers": list(markers)}


def full_run(replication_outcomes=("passed",) * 4):
    return [
        t("passed", "setup"),
        t("passed", "haproxy"),
        *(t(o, "replication") for o in replication_outcomes),
        t("passed", "cache"),
        t("passed", "cache"),
        t("passed", "resilience"),
        t("passed", "failover"),
        t("passed", "failover"),
    ]


def test_scheme_is_the_briefs():
    grade = compute_grade([])
    assert [(l.label, l.weight) for l in grade.lines] == [
        ("Docker & lancement", 3),
        ("Réplication", 5),
        ("Cache Redis", 5),
        ("Résilience", 3),
        ("Haute disponibilité", 4),
    ]
    assert MAX_POINTS == 20
    assert set(LAB_MARKERS) == {
        "setup", "haproxy", "replication", "cache", "resilience", "failover",
        "stampede", "patroni", "sentinel",
    }


def test_all_passed_is_20():
    grade = compute_grade(full_run())
    assert grade.points == pytest.approx(20)
    assert "20/20" in grade.text_table()
    assert grade.to_dict()["display"] == "20/20"


def test_one_failed_replication_test_costs_exactly_weight_over_n():
    n = 4
    before = compute_grade(full_run(("passed",) * n))
    after = compute_grade(full_run(("failed",) + ("passed",) * (n - 1)))
    assert before.line("replication").points - after.line("replication").points == pytest.approx(5 / n)
    assert before.points - after.points == pytest.approx(5 / n)
    assert after.line("replication").passed == n - 1
    assert after.line("replication").total == n
    assert after.line("cache").points == pytest.approx(5)


@pytest.mark.parametrize("outcome", ["skipped", "error", "failed"])
def test_not_passed_earns_nothing(outcome):
    grade = compute_grade([t(outcome, "cache"), t("passed", "cache")])
    line = grade.line("cache")
    assert (line.passed, line.total) == (1, 2)
    assert line.points == pytest.approx(2.5)


def test_only_skipped_counts_as_run_with_zero():
    line = compute_grade([t("skipped", "resilience")]).line("resilience")
    assert line.executed and line.points == 0


def test_line_not_run():
    grade = compute_grade([t("passed", "setup")])
    ha = grade.line("ha")
    assert not ha.executed and ha.points == 0
    table = grade.text_table()
    ha_row = next(row for row in table.splitlines() if row.startswith("Haute disponibilité"))
    assert NOT_RUN in ha_row and "0/4" in ha_row
    assert grade.points == pytest.approx(3)


def test_docker_line_pools_setup_and_haproxy_and_multi_marker_counts_per_line():
    grade = compute_grade([
        t("passed", "setup", "haproxy"),      # one test, one line: counted once
        t("failed", "haproxy"),
        t("passed", "haproxy", "failover"),   # two lines: counted in each
    ])
    docker, ha = grade.line("docker"), grade.line("ha")
    assert (docker.passed, docker.total) == (2, 3)
    assert docker.points == pytest.approx(2)
    assert (ha.passed, ha.total) == (1, 1)
    assert ha.points == pytest.approx(4)


def test_bonus_apart_from_the_20():
    base = full_run()
    with_bonus = base + [t("passed", "stampede"), t("failed", "patroni"), t("passed", "patroni")]
    grade = compute_grade(with_bonus)
    assert grade.points == pytest.approx(20)
    assert grade.max_points == 20
    assert (grade.bonus("stampede").passed, grade.bonus("stampede").total) == (1, 1)
    assert (grade.bonus("patroni").passed, grade.bonus("patroni").total) == (1, 2)
    assert not grade.bonus("sentinel").executed
    table = grade.text_table()
    assert "Bonus (hors barème)" in table
    assert "1/2 réussis" in table
    sentinel_row = next(row for row in table.splitlines() if row.startswith("HA Redis (Sentinel)"))
    assert NOT_RUN in sentinel_row


def test_unmarked_tests_are_ignored():
    grade = compute_grade([t("failed"), t("passed", "cache")])
    assert grade.points == pytest.approx(5)
    assert grade.counted_tests == 1


def test_dict_round_trip_and_markdown():
    grade = compute_grade(full_run(("passed", "failed", "passed")))
    data = grade.to_dict()
    assert data["points"] == pytest.approx(20 - 5 / 3, abs=1e-3)
    assert data["lines"][1]["passed"] == 2 and data["lines"][1]["total"] == 3
    again = grade_from_dict(data)
    assert again.points == pytest.approx(grade.points)
    md = grade.markdown_table()
    assert "| Réplication | 2/3 | 3,33/5 |" in md
    assert "**18,33/20**" in md
