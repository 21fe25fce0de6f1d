"""pytest plugin: attach measured figures to tests and write the results file.

Register it from the root ``conftest.py``::

    pytest_plugins = ["chaoslab.pytest_plugin"]

What it gives:

- fixture ``measure``: ``measure(name, value, unit="")`` records a figure as a
  JUnit test-case property (``record_property``) and in ``results.json``;
  ``measure.attach(name, path)`` records a data file (a path relative to the
  rootdir) as the property ``attachment:<name>``. Figures are stored the moment
  they are measured, so a test that fails afterwards keeps them.
- fixture ``run_info``: ``run_info(key, value)`` and
  ``run_info.version(component, version)``, the same as the functions
  :func:`set_run_info` and :func:`set_version`, for anything the harness learns
  about the run (server versions, ``cache_ttl_seconds``...).
- hook ``pytest_chaoslab_run_info(config)``: implement it in a conftest to
  return a dict merged into ``run`` at the end of the session.
- option ``--results-file`` (default ``reports/results.json`` under the rootdir).
- at the end of the session: ``results.json`` (layout in :mod:`chaoslab.results`),
  the backend and the results file as test-suite properties of the JUnit XML
  (``junit_family = xunit1``), and the slowest scenarios in the terminal summary.

Points are decided by the grader (chaoslab.grader) alone, never by which tests passed.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import pytest

from chaoslab import phases, rundir
from chaoslab.results import SCENARIO_MARKERS, SCHEMA_VERSION, TestRecord, json_safe, summarize, write_results

DEFAULT_RESULTS_FILE = "reports/results.json"
ATTACHMENT_PREFIX = "attachment:"
SLOWEST_SHOWN = 5
MESSAGE_BUDGET = 500


@dataclass
class _RunState:
    started_at: datetime = field(default_factory=lambda: datetime.now().astimezone())
    started_monotonic: float = field(default_factory=time.monotonic)
    records: dict[str, TestRecord] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)
    results_path: Path | None = None


_state_key = pytest.StashKey[_RunState]()


def _state(config: pytest.Config) -> _RunState:
    state = config.stash.get(_state_key, None)
    if state is None:
        state = config.stash[_state_key] = _RunState()
    return state


# --- run information -------------------------------------------------------


def set_run_info(config: pytest.Config, key: str, value: Any) -> None:
    """Put ``key: value`` in the ``run`` section of ``results.json``."""
    _state(config).run_info[key] = json_safe(value) if not isinstance(value, (dict, list)) else value


def set_version(config: pytest.Config, component: str, version: Any) -> None:
    """Record a component version (``postgresql``, ``redis``, ``haproxy``...) in ``run.versions``."""
    versions = _state(config).run_info.setdefault("versions", {})
    versions[component] = json_safe(version)


class RunInfo:
    """The ``run_info`` fixture: ``run_info(key, value)``, ``run_info.version(name, v)``."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config

    def __call__(self, key: str, value: Any) -> None:
        set_run_info(self._config, key, value)

    def version(self, component: str, version: Any) -> None:
        set_version(self._config, component, version)


class _HookSpecs:
    @pytest.hookspec
    def pytest_chaoslab_run_info(self, config: pytest.Config) -> dict[str, Any] | None:
        """Return a dict merged into the ``run`` section of ``results.json``.

        Called once, at the end of the session. A ``versions`` dict is merged
        key by key with the versions given through :func:`set_version`.
        """


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(_HookSpecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaoslab", "chaos lab results")
    group.addoption(
        "--results-file",
        dest="chaoslab_results_file",
        default=DEFAULT_RESULTS_FILE,
        metavar="PATH",
        help=f"where to write the run's results (relative to the rootdir; default {DEFAULT_RESULTS_FILE})",
    )


_RECORDER_NAME = "chaoslab-recorder"


def pytest_configure(config: pytest.Config) -> None:
    _state(config)
    config.pluginmanager.register(_Recorder(config), _RECORDER_NAME)


def pytest_unconfigure(config: pytest.Config) -> None:
    recorder = config.pluginmanager.get_plugin(_RECORDER_NAME)
    if recorder is not None:
        config.pluginmanager.unregister(recorder)


# --- the measure fixture ---------------------------------------------------


class Measure:
    """Records figures for the current test: see the module docstring."""

    def __init__(
        self,
        record_property: Callable[[str, object], None],
        record: TestRecord,
        rootpath: Path,
    ) -> None:
        self._record_property = record_property
        self._record = record
        self._rootpath = rootpath

    def __call__(self, name: str, value: float | int | str, unit: str = "") -> Any:
        if not isinstance(name, str) or not name:
            raise TypeError(f"measure: the name must be a non-empty str, got {name!r}")
        self._record_property(name, json_safe(value))
        self._record.add_measurement(name, value, unit)
        return value

    def attach(self, name: str, path: str | os.PathLike[str]) -> str:
        """Record a data file; returns the path as stored (relative to the rootdir if inside it)."""
        absolute = Path(os.path.abspath(path))
        try:
            stored = absolute.relative_to(self._rootpath).as_posix()
        except ValueError:
            stored = str(absolute)
        self._record_property(ATTACHMENT_PREFIX + name, stored)
        self._record.attachments[name] = stored
        return stored


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Measure:
    """``measure(name, value, unit="")`` and ``measure.attach(name, path)``."""
    try:
        record_property = request.getfixturevalue("record_property")
    except pytest.FixtureLookupError:  # junitxml disabled (-p no:junitxml): same effect by hand
        def record_property(name: str, value: object) -> None:
            request.node.user_properties.append((name, value))
    record = _record_for(request.config, request.node)
    return Measure(record_property, record, request.config.rootpath)


@pytest.fixture
def run_info(pytestconfig: pytest.Config) -> RunInfo:
    """``run_info(key, value)`` and ``run_info.version(component, version)``."""
    return RunInfo(pytestconfig)


# --- per-test bookkeeping --------------------------------------------------


def _lab_markers(item: pytest.Item) -> list[str]:
    return list(dict.fromkeys(m.name for m in item.iter_markers() if m.name in SCENARIO_MARKERS))


def _record_for(config: pytest.Config, item: pytest.Item) -> TestRecord:
    records = _state(config).records
    record = records.get(item.nodeid)
    if record is None:
        callspec = getattr(item, "callspec", None)
        record = records[item.nodeid] = TestRecord(
            nodeid=item.nodeid,
            name=item.name,
            file=item.location[0],
            param_id=callspec.id if callspec is not None else None,
            markers=_lab_markers(item),
            outcome="",
        )
    return record


def _message(report: pytest.TestReport) -> str | None:
    """One line saying why a test did not pass (the crash message or skip reason)."""
    longrepr = report.longrepr
    if longrepr is None:
        return None
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, reason)
        text = str(longrepr[2])
    else:
        crash = getattr(longrepr, "reprcrash", None)
        lines = str(longrepr).strip().splitlines()
        text = crash.message if crash is not None else (lines[-1] if lines else "")
    if getattr(report, "wasxfail", None) is not None:
        text = f"xfail: {report.wasxfail or text}"
    return text if len(text) <= MESSAGE_BUDGET else text[: MESSAGE_BUDGET - 3] + "..."


def _merge_run_info(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if key == "versions" and isinstance(value, dict):
            into.setdefault("versions", {}).update(value)
        else:
            into[key] = value


# --- end of session --------------------------------------------------------


def _should_write(config: pytest.Config) -> bool:
    if config.option.collectonly or hasattr(config, "workerinput"):  # xdist worker
        return False
    return True


def _kept_logs_dir(config: pytest.Config) -> Path:
    """Where the servers' logs go once a test failed: beside the results file, one directory
    per results file, so that the suites of one CI run (local, compose...) keep theirs apart."""
    results = _results_path(config)
    return results.parent / "logs" / results.stem


def _results_path(config: pytest.Config) -> Path:
    raw = config.getoption("chaoslab_results_file", default=DEFAULT_RESULTS_FILE) or DEFAULT_RESULTS_FILE
    path = Path(raw)
    return path if path.is_absolute() else config.rootpath / path


def _backend(config: pytest.Config) -> str:
    try:
        backend = config.getoption("--backend", default=None)
    except ValueError:
        backend = None
    return str(backend) if backend else "local"


def _run_section(config: pytest.Config, state: _RunState, exitstatus: int) -> dict[str, Any]:
    run: dict[str, Any] = {
        "backend": _backend(config),
        "started_at": state.started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "wall_seconds": round(time.monotonic() - state.started_monotonic, 3),
        "python": platform.python_version(),
        "pytest": pytest.__version__,
        "platform": platform.platform(),
        "argv": [str(a) for a in config.invocation_params.args],
        "rootdir": str(config.rootpath),
        "exit_status": int(exitstatus),
        "versions": {"python": platform.python_version()},
    }
    extra = [state.run_info, *(d for d in config.hook.pytest_chaoslab_run_info(config=config) if isinstance(d, dict))]
    for info in extra:
        for key, value in info.items():
            if key == "versions" and isinstance(value, dict):
                run["versions"].update({k: json_safe(v) for k, v in value.items()})
            else:
                run[key] = value
    return run


def _junit_xml(config: pytest.Config) -> Any:
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - pytest moved it
        return next(
            (p for p in config.pluginmanager.get_plugins() if hasattr(p, "add_global_property")),
            None,
        )
    return config.stash.get(xml_key, None)


def _add_junit_suite_properties(config: pytest.Config, results_path: Path) -> None:
    xml = _junit_xml(config)
    if xml is None:
        return
    xml.add_global_property("backend", _backend(config))
    xml.add_global_property("results_file", str(results_path))


def _finished_tests(state: _RunState) -> list[dict[str, Any]]:
    tests = []
    for record in state.records.values():
        if not record.outcome:  # interrupted before any verdict
            record.outcome = "error"
            record.message = record.message or "interrompu avant la fin du test"
        tests.append(record.to_dict())
    return tests


class _Recorder:
    """Per-session hooks; registered by pytest_configure, so each Config has its own."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.state = _state(config)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None):
        """Each test gets its own ledger of phases, from its setup to its teardown."""
        with phases.recording() as ledger:
            record = _record_for(self.config, item)
            record.phases = ledger   # filled as the phases end
            record.worker, record.started_at = os.environ.get("PYTEST_XDIST_WORKER"), time.time()
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]):
        report = yield
        record = _record_for(self.config, item)
        if call.when == "teardown" and hasattr(self.config, "workerinput"):
            # An xdist worker: its last report carries what the controller cannot see.
            report.chaoslab_worker = {"record": record.to_dict(), "run_info": self.state.run_info}
        return report

    # xdist sends reports between processes as dicts: the worker's record rides along.
    @pytest.hookimpl(wrapper=True)
    def pytest_report_to_serializable(self, config: pytest.Config, report: Any):
        data = yield
        if data is not None and getattr(report, "chaoslab_worker", None) is not None:
            data["chaoslab_worker"] = report.chaoslab_worker
        return data

    @pytest.hookimpl(wrapper=True)
    def pytest_report_from_serializable(self, config: pytest.Config, data: dict[str, Any]):
        report = yield
        if report is not None and "chaoslab_worker" in data:
            report.chaoslab_worker = data["chaoslab_worker"]
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            # The servers' logs outlive the run from now on: a failure names them.
            rundir.keep_logs_in(_kept_logs_dir(self.config))
        records = self.state.records
        record = records.get(report.nodeid)
        if record is None:  # a report from a node never seen here (e.g. from an xdist worker)
            record = records[report.nodeid] = TestRecord(nodeid=report.nodeid, outcome="")
        record.duration_total_s += report.duration
        record.properties = [list(p) for p in report.user_properties]
        worker = getattr(report, "chaoslab_worker", None)
        if worker is not None:   # the controller of an xdist run
            record.take_from_worker(worker["record"])
            _merge_run_info(self.state.run_info, worker["run_info"])

        if report.when == "setup":
            record.duration_setup_s = report.duration
            if report.failed:
                record.outcome, record.failed_phase = "error", "setup"
                record.message = _message(report)
            elif report.skipped:
                record.outcome, record.message = "skipped", _message(report)
        elif report.when == "call":
            record.duration_call_s = report.duration
            if report.failed:
                record.outcome, record.failed_phase = "failed", "call"
                record.message = _message(report)
            elif report.skipped:
                record.outcome, record.message = "skipped", _message(report)
            else:
                record.outcome = "passed"
        elif report.when == "teardown":
            record.duration_teardown_s = report.duration
            # a failed call stays "failed"; a teardown failure after anything else is an error
            if report.failed and record.outcome not in ("failed", "error"):
                record.outcome, record.failed_phase = "error", "teardown"
                record.message = _message(report)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not hasattr(self.config, "workerinput"):   # the controller: before any worker starts
            shutil.rmtree(_kept_logs_dir(self.config), ignore_errors=True)   # an earlier run's
        self.state.started_at = datetime.now().astimezone()
        self.state.started_monotonic = time.monotonic()

    # tryfirst: the junitxml plugin writes its file in its own (plain)
    # pytest_sessionfinish, so the suite properties must be added before that.
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        config, state = self.config, self.state
        tests = _finished_tests(state)
        if not _should_write(config):
            return
        path = _results_path(config)
        data = {
            "schema": SCHEMA_VERSION,
            "run": _run_section(config, state, exitstatus),
            "summary": summarize(tests),
            "tests": tests,
        }
        state.results_path = write_results(path, data)
        _add_junit_suite_properties(config, path)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        state = self.state
        scenarios = [r for r in state.records.values() if r.markers]
        if scenarios:
            terminalreporter.write_sep("-", f"scénarios les plus lents (top {SLOWEST_SHOWN})")
            slowest = sorted(scenarios, key=lambda r: r.duration_total_s, reverse=True)
            for record in slowest[:SLOWEST_SHOWN]:
                terminalreporter.write_line(
                    f"{record.duration_total_s:8.2f}s  {record.outcome or '?':<7}  {record.nodeid}"
                )
        if state.results_path is not None:
            terminalreporter.write_line(f"résultats: {state.results_path}")
        kept = _kept_logs_dir(self.config)
        if kept.is_dir() and any(record.outcome in ("failed", "error") for record in state.records.values()):
            terminalreporter.write_line(f"journaux des serveurs, gardés après le premier échec: {kept}/<run>/")
