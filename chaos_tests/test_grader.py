"""The grader on this lab's own stack: our API gets every point the local backend can give,
and API settings that break one behaviour each lose exactly the checks that name it.

The compose checks (A1, A2) cannot run on local processes: they score 0, "not run".
Broken submissions as whole directories (compose file, API, HAProxy config) are graded
the same way by the compose path.
"""

from __future__ import annotations

import pytest

from chaoslab.grader import rubric
from chaoslab.grader.lab_target import LabTarget
from chaoslab.grader.run import grade_target
from chaoslab.topology import HAPROXY, PRIMARY

pytestmark = pytest.mark.grader

NOT_ON_LOCAL = {"A1.compose_services", "A2.stack_up"}

# variant -> (API settings, given the lab; the checks it must lose)
VARIANTS = {
    "as_shipped": (lambda lab: {}, set()),
    "ttl_600s": (lambda lab: {"CACHE_TTL_SECONDS": "600"}, {"D2.ttl_in_range"}),
    "no_cache": (lambda lab: {"CACHE_ENABLED": "false"},
                 {"D2.key_filled", "D2.ttl_in_range", "D2.hit_served_from_redis", "D3.put_invalidates"}),
    "reads_from_the_primary": (lambda lab: {"DB_READ_DSN": lab.dsn(HAPROXY)}, {"D1.reads_from_replica"}),
    "writes_around_haproxy": (lambda lab: {"DB_WRITE_DSN": lab.dsn(PRIMARY)}, {"F4.writes_after_switch"}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_grader_gives_exactly_the_points_of_what_works(lab, api_with, measure, variant):
    settings, lost = VARIANTS[variant]
    api = api_with(**settings(lab))
    grade = grade_target(LabTarget(lab, api))
    failed = {r.id for r in grade.results if r.outcome == rubric.FAILED}
    not_run = {r.id for r in grade.results if r.outcome == rubric.NOT_RUN}
    measure("grade_points", grade.points)
    measure("lost_checks", ",".join(sorted(failed)) or "none")
    assert not_run == NOT_ON_LOCAL, {r.id: r.message for r in grade.results if r.id in not_run}
    assert failed == lost, {r.id: r.message for r in grade.results if r.id in failed | lost}
    expected = rubric.MAX_POINTS - sum(rubric.BY_ID[i].points for i in lost | NOT_ON_LOCAL)
    assert grade.points == expected
