"""The lab's pytest wiring: options, the session's cluster, the per-scenario baseline.

The harness itself lives in the chaoslab package; this file only connects it to pytest.
"""

from __future__ import annotations

import pytest

from chaoslab.api_server import ApiServer
from chaoslab.backends import BACKENDS, create_cluster, create_patroni_cluster
from chaoslab.errors import LabError
from chaoslab.interrupts import terminate_like_ctrl_c
from chaoslab.phases import phase

pytest_plugins = ["chaoslab.pytest_plugin"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaoslab")
    group.addoption("--backend", choices=sorted(BACKENDS), default="local",
                    help="where the lab runs: real local processes (default) or docker compose")


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (a CI runner giving up, `timeout`, `kill`) ends the run as Ctrl-C does:
    every fixture's teardown runs and nothing of the lab stays. Under xdist the workers hold
    the labs: the controller passes the signal on to them at once."""
    xdist_controller = not hasattr(config, "workerinput") and bool(config.getoption("numprocesses", None))
    terminate_like_ctrl_c(pass_on_to_children=xdist_controller)
    # xdist hands out files with the most tests first unless told not to; the collection's
    # order (LONGEST_FIRST) is the one to keep.
    if getattr(config.option, "loadscopereorder", None):
        config.option.loadscopereorder = False


# The order in which `make test`'s workers are handed files, the longest first (their lengths in
# one `make test`, `python -m chaoslab phases`): the run ends with its last worker, and a long
# file handed out last ends it late alone (test_hands_on_bonus.py, 64 s, started at 150 s of a
# 220 s run). The files not named here follow in collection order; each lasts under 2 s. That
# matters too: xdist hands a worker its next file when two of its tests are left, so a file
# queues behind test_patroni.py's last two (about 20 s) unless others took every long one.
LONGEST_FIRST = (
    "chaos_tests/test_patroni.py",                 # about 170 s: Patroni's leases and outages
    "chaos_tests/test_network.py",                 # 85
    "chaos_tests/test_sentinel.py",                # 81
    "chaos_tests/harness/test_hands_on.py",        # 60
    "chaos_tests/test_f_failover.py",              # 50
    "chaos_tests/harness/test_hands_on_bonus.py",  # 45
    "chaos_tests/test_e_resilience.py",            # 40
    "chaos_tests/test_grader.py",                  # 35
    "chaos_tests/harness/test_cleanup.py",         # 35
    "chaos_tests/test_stampede.py",                # 33
    "chaos_tests/test_d_cache.py",                 # 17
    "chaos_tests/harness/test_patroni_reaper.py",  # 6
    "chaos_tests/test_api_input.py",               # 5
    "chaos_tests/test_c_haproxy.py",               # 4.5
    "chaos_tests/unit/test_report.py",             # 4
    "chaos_tests/harness/test_cpu_budget.py",      # 4
    "chaos_tests/unit/test_faultproxy.py",         # 3
    "chaos_tests/harness/test_failure_messages.py",  # 2.5
    "chaos_tests/unit/test_workload.py",           # 2
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that belong to one backend only are left out of the other's runs, rather than
    reported as if they had run there: the harness' own tests start local processes, and
    the graded submissions are compose projects. On an xdist worker, LONGEST_FIRST leads."""
    wrong = "submissions" if config.getoption("--backend") == "local" else "harness"
    elsewhere = [item for item in items if item.get_closest_marker(wrong)]
    if elsewhere:
        config.hook.pytest_deselected(items=elsewhere)
        items[:] = [item for item in items if not item.get_closest_marker(wrong)]
    if hasattr(config, "workerinput"):   # an xdist worker: its order is the order files are handed out
        rank = {path: index for index, path in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest):
    """The whole stack, started once per session and removed at the end (Ctrl-C included)."""
    lab = create_cluster(request.config.getoption("--backend"))
    try:
        with phase("lab start"):
            lab.start()
    except LabError as exc:
        pytest.fail(f"the lab could not start: {exc}", pytrace=False)
    from chaoslab.pytest_plugin import set_run_info, set_version  # after pytest registered the plugin

    set_run_info(request.config, "backend", lab.name)
    for component, version in lab.versions().items():
        set_version(request.config, component, version)
    try:
        yield lab
    finally:
        with phase("lab stop"):
            lab.close()


@pytest.fixture
def lab(cluster):
    """The cluster in its healthy baseline: any scenario can run alone or in any order."""
    try:
        cluster.restore_baseline()
    except LabError as exc:
        pytest.fail(f"the lab could not be restored to its baseline: {exc}", pytrace=False)
    return cluster


@pytest.fixture(scope="session")
def api_server(cluster):
    """The API under test, a real uvicorn process, shared by the scenarios that need it."""
    server = ApiServer(cluster)
    try:
        yield server
    finally:
        server.close()


def _ready(server: ApiServer, **settings: str) -> ApiServer:
    try:
        server.ensure(**settings)
    except LabError as exc:
        pytest.fail(f"the API could not start: {exc}", pytrace=False)
    return server


@pytest.fixture
def api(lab, api_server):
    """The API with its default settings, in front of a baseline lab, ready to read and write.

    A scenario that needs other settings from its start takes ``api_with`` instead; one that
    changes them halfway calls ``api.ensure(SETTING=value)``.
    """
    return _ready(api_server)


@pytest.fixture
def api_with(lab, api_server):
    """The API with the settings a scenario names, ready: ``api = api_with(SETTING=value)``.

    It restarts once if the running API has other settings, where ``api`` then
    ``api.ensure(...)`` would restart twice (to the defaults, then to the scenario's): a
    restart is about a second of a busy ``make test``, and a third of the scenarios have
    settings of their own."""
    return lambda **settings: _ready(api_server, **settings)


@pytest.fixture(scope="session")
def no_cache_api_server(cluster):
    """A second API process, with the cache off, kept for the session beside ``api_server``."""
    server = ApiServer(cluster)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def no_cache_api(lab, no_cache_api_server):
    """The same API with the cache off (``CACHE_ENABLED=false``): every read reaches a database.

    A process of its own rather than ``api`` restarted: a scenario that compares reads with and
    without the cache (E1's no-cache latency, the cache's before/after) uses both, and neither
    restarts. It idles between the scenarios that use it (no request, no query)."""
    return _ready(no_cache_api_server, CACHE_ENABLED="false")


@pytest.fixture(scope="session")
def redis_ha_group(cluster):
    """The Sentinel bonus topology: started only when a scenario asks for it."""
    group = cluster.redis_ha()
    try:
        with phase("lab start"):
            group.start()
    except LabError as exc:
        pytest.fail(f"the Redis Sentinel group could not start: {exc}", pytrace=False)
    try:
        yield group
    finally:
        with phase("lab stop"):
            group.close()


@pytest.fixture
def redis_ha(lab, redis_ha_group):
    """The Sentinel group with every node up, one agreed master and no data."""
    redis_ha_group.restore_baseline()
    return redis_ha_group


# -- the Patroni bonus topology (etcd + two Patroni nodes + HAProxy + Redis) -------------------
@pytest.fixture(scope="session")
def patroni_cluster(request: pytest.FixtureRequest):
    """The Patroni stack on the chosen backend, started once, only if a patroni test runs."""
    lab = create_patroni_cluster(request.config.getoption("--backend"))
    try:
        with phase("lab start"):
            lab.start()
    except LabError as exc:
        pytest.fail(f"the Patroni lab could not start: {exc}", pytrace=False)
    from chaoslab.pytest_plugin import set_version

    try:
        versions = lab.versions()
        for component in ("patroni", "etcd"):
            set_version(request.config, component, versions.get(component, "?"))
        yield lab
    finally:
        with phase("lab stop"):
            lab.close()


@pytest.fixture(scope="session")
def patroni_api_server(patroni_cluster):
    """The unchanged API, its write DSN on HAProxy's /primary frontend, reads on /replica."""
    server = ApiServer(patroni_cluster)
    try:
        yield server
    finally:
        server.close()


# Module-scoped so that pytest runs a file's async scenarios before its sync ones (the few
# parametrized async only say scope="module" too): synchronous_mode changes once each way.
@pytest.fixture(scope="module", params=[False, True], ids=["async", "sync"])
def synchronous(request) -> bool:
    return request.param


@pytest.fixture
def patroni_lab(patroni_cluster, synchronous):
    try:
        patroni_cluster.restore_baseline(synchronous=synchronous)
    except LabError as exc:
        pytest.fail(f"the Patroni lab could not be restored to its baseline: {exc}", pytrace=False)
    return patroni_cluster


@pytest.fixture
def patroni_api(patroni_lab, patroni_api_server):
    try:
        patroni_api_server.ensure()
    except LabError as exc:
        pytest.fail(f"the API could not start: {exc}", pytrace=False)
    return patroni_api_server
