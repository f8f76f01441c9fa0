"""The harness as a pytest plugin: its options, the commits as parametrised tests, progress lines,
the JUnit report moved into place atomically and the status lists written from it.

Loaded by the root conftest.py (`pytest_plugins`); session state lives in `config.stash`."""
from __future__ import annotations

import contextlib
import gc
import os
import re
import signal
import threading
import uuid
from pathlib import Path

import pytest

from helpers.config import OPTIONS, HarnessConfig, make_config
from helpers.errors import CATEGORIES, ConfigError, HarnessError, InfraError
from helpers.pipeline import Harness
from helpers.publish.registry import ensure_local_registry
from helpers.report import results as report
from helpers.report.progress import Followers, RunProgress
from helpers.source import dataset

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "build_suite"
SHARD_GROUPS = pytest.StashKey[dict]()
SESSION_ID = pytest.StashKey[str]()
CONFIG = pytest.StashKey[HarnessConfig | None]()
PUSHED = pytest.StashKey[set[str] | None]()
JUNIT = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "commit image harness")
    for option in OPTIONS:
        group.addoption(option.flag, **option.keywords())


def option_values(config: pytest.Config) -> dict:
    return {option.name: config.getoption(option.name) for option in OPTIONS}


def is_build_run(config: pytest.Config) -> bool:
    paths = [Path(str(a).split("::")[0]).resolve() for a in config.args] or [SUITE]
    return any(p == ROOT or p == SUITE or SUITE in p.parents for p in paths)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    worker = getattr(config, "workerinput", None)
    config.stash[SESSION_ID] = worker["harness_session"] if worker else uuid.uuid4().hex
    config.stash[CONFIG] = None
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(SessionIdToWorkers(), "harness-xdist")
    if not is_build_run(config) or config.option.help:
        return
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate_as_interrupt)
    if getattr(config.option, "lf", False):
        # `--lf` after a run without failures rebuilds nothing (pytest's default would rebuild every commit)
        config.option.last_failed_no_failures = "none"
    options = option_values(config)
    options["collect_only"] = config.option.collectonly
    try:
        config.stash[CONFIG] = cfg = make_config(options, ROOT, config.stash[SESSION_ID])
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from e
    if not worker:
        config.pluginmanager.register(ProgressLines(config), "harness-progress")
    if not worker and cfg.show_build_logs:
        config.pluginmanager.register(BuildLogEcho(config, cfg.log_dir), "harness-log-echo")
    if not worker and not config.option.collectonly and not cfg.prepare_only:
        final = Path(config.option.xmlpath or ROOT / "reports" / "junit.xml").resolve()
        final.parent.mkdir(parents=True, exist_ok=True)
        config.stash[JUNIT] = final
        config.option.xmlpath = str(final.with_name(f".{final.name}.{os.getpid()}.tmp"))


class BuildLogEcho:
    """--show-build-logs: the terminal's process follows each running commit's log file."""

    def __init__(self, config: pytest.Config, log_dir: Path):
        self.followers = Followers(terminal_writer(config))
        self.log_dir = log_dir

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        sha = re.search(r"([0-9a-f]{7,40})\]$", nodeid)
        if sha:
            self.followers.start(nodeid, self.log_dir / f"{sha.group(1)}.log", sha.group(1)[:12])

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self.followers.stop(nodeid)


class ProgressLines:
    """A line per finished commit as the run goes (result, category, build seconds); a table at the end."""

    def __init__(self, config: pytest.Config):
        self.config, self.progress = config, RunProgress()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "test_commit[" not in report.nodeid:
            return
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longreprtext
        line = self.progress.finish(report.nodeid, report.when, report.outcome, dict(report.user_properties), reason)
        if line:
            terminal = self.config.pluginmanager.get_plugin("terminalreporter")
            if self.config.get_terminal_writer().width_of_current_line:
                terminal.write("\n")                # after the progress dots
            terminal.write_line(line)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        table = self.progress.table()
        if table:
            terminalreporter.section("commits of this run")
            for line in table:
                terminalreporter.write_line(line)


def terminal_writer(config: pytest.Config):
    """Writes to the real terminal even while pytest captures this process's output (no -n): called
    at pytest_configure, when pytest has suspended its capture, it keeps its own copy of stdout."""
    terminal = os.dup(1)
    return lambda line: os.write(terminal, (line + "\n").encode("utf-8", "replace"))


class SessionIdToWorkers:
    """Gives every xdist worker the controller's session id (one mirror fetch per session)."""

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        node.workerinput["harness_session"] = node.config.stash[SESSION_ID]
        pushed = node.config.stash.get(PUSHED, None)
        node.workerinput["harness_pushed"] = None if pushed is None else sorted(pushed)


def pytest_sessionstart(session: pytest.Session) -> None:
    """On the controller, before any worker starts: the engine must answer, and --skip-pushed
    lists the repository's tags once for the whole session."""
    config = session.config
    worker = getattr(config, "workerinput", None)
    pushed = worker.get("harness_pushed") if worker else None
    config.stash[PUSHED] = None if pushed is None else set(pushed)
    cfg = config.stash[CONFIG]
    if cfg is None or config.option.collectonly or worker:
        return
    harness = Harness(cfg)
    if cfg.prepare_only:
        try:
            harness.mirror.ensure()
        except InfraError as e:
            raise pytest.UsageError(f"stopping before any commit: {why(e)}") from e
        return
    try:
        harness.require_engine()
        harness.mirror.ensure()     # a repository that cannot be cloned stops the session here, the lists untouched
        if cfg.local_registry and (cfg.push or cfg.verify_only or cfg.skip_pushed):
            ensure_local_registry(harness.docker, int(cfg.image.registry.rsplit(":", 1)[1]))
        if cfg.skip_pushed:
            config.stash[PUSHED] = harness.pushed_tags()
    except InfraError as e:
        raise pytest.UsageError(f"stopping before any commit: {why(e)}") from e
    if harness.mirror.stale:
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.write_line(f"warning: the mirror of {cfg.repo_url} could not be updated ({harness.mirror.stale}); "
                                "building from the commits it already holds", yellow=True)


def why(error: InfraError) -> str:
    """An error's message and the last line of its log (git's own reason for a failed clone)."""
    last = error.log_tail.strip().splitlines()[-1] if error.log_tail and error.log_tail.strip() else ""
    return f"{error.message}: {last}" if last else error.message


def pytest_report_header(config: pytest.Config) -> list[str]:
    cfg = config.stash.get(CONFIG, None)
    if cfg is None or cfg.prepare_only or config.option.collectonly:
        return []
    lines = []
    if cfg.local_registry and not cfg.no_push:
        lines.append(f"images go to the harness's own registry {cfg.image.registry} (container commit-image-harness-"
                     f"registry-{cfg.image.registry.rsplit(':', 1)[1]}, left running so other machines can pull); to "
                     "push to Docker Hub instead, set DOCKERHUB_USERNAME and DOCKERHUB_TOKEN (or docker login), or "
                     "pass --namespace")
    with contextlib.suppress(HarnessError):
        lines.append(Harness(cfg).disk.describe())
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "commit" not in metafunc.fixturenames:
        return
    cfg = metafunc.config.stash.get(CONFIG, None)
    if cfg is None:
        raise pytest.UsageError("the build suite needs the harness configuration (run it from the project root)")
    plan = dataset.load_plan(cfg.dataset, cfg.blacklist)
    metafunc.config.stash[SHARD_GROUPS] = plan.groups
    entries = list(plan.entries)
    if any(isinstance(e, dataset.CommitSpec) and len(e.sha) < 40 for e in entries):
        entries = dataset.with_full_shas(entries, Harness(cfg).mirror.resolve)    # ids carry full SHAs
    params = [pytest.param(e, id=e.test_id, marks=[getattr(pytest.mark, r) for r in e.roles] or
                           [pytest.mark.dataset]) for e in entries]
    metafunc.parametrize("commit", params)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """After -k/-m/--lf: what is already pushed (kept, to be reported skipped, but not counted), the
    first --batch-size commits with work, then this --shard's part of them (dataset.select)."""
    cfg = config.stash.get(CONFIG, None)
    if cfg is None:
        return
    entries = {i: i.callspec.params["commit"] for i in items
               if hasattr(i, "callspec") and "commit" in i.callspec.params}
    pushed = config.stash.get(PUSHED, None)
    chosen = dataset.select(entries.values(), lambda e: Harness.has_work(e.sha, pushed, cfg.verify_only),
                            cfg.batch_size, cfg.shard, config.stash.get(SHARD_GROUPS, {}))
    kept_ids = {id(e) for e in chosen}
    dropped = {i for i, e in entries.items() if id(e) not in kept_ids}
    if dropped:
        config.hook.pytest_deselected(items=[i for i in items if i in dropped])
        items[:] = [i for i in items if i not in dropped]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Ten thousand collected commits are long-lived objects: keep the garbage collector (which
    pytest runs several times at the end of a session) from walking them again and again."""
    if session.config.stash.get(CONFIG, None) is not None:
        gc.freeze()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is None or call.when == "teardown" or "commit" not in getattr(item, "fixturenames", ()):
        return
    error = call.excinfo.value
    if call.excinfo.errisinstance(pytest.skip.Exception):
        return
    category, reason = failure_category(error)
    for prop in (("category", category), ("reason", reason)):
        item.user_properties.append(prop)
        report.user_properties.append(prop)
    if isinstance(error, HarnessError):
        report.longrepr = error.describe()


def failure_category(error: BaseException) -> tuple[str, str]:
    """A harness error names its category; a failed check's assertion message starts with it."""
    if isinstance(error, HarnessError):
        return error.category, error.message.strip().splitlines()[0][:300] if error.message.strip() else ""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    category = first.split(":", 1)[0]
    if isinstance(error, AssertionError) and category in CATEGORIES:
        return category, first[:300]
    return "infra_error", f"{type(error).__name__}: {first}"[:300]



@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """The JUnit file is written beside its final name and moved there at the end (pytest_unconfigure):
    pytest's own summary line names the final file, not the temporary one."""
    final = session.config.stash.get(JUNIT, None)
    for plugin in session.config.pluginmanager.get_plugins() if final else ():
        if getattr(plugin, "logfile", None) == session.config.option.xmlpath:     # pytest's JUnit writer
            plugin.logfile = str(final)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    final = config.stash.get(JUNIT, None)
    if final is not None:
        cfg = config.stash[CONFIG]
        terminalreporter.write_line(f"JUnit report: {final}; status lists: {cfg.status_dir}; logs: {cfg.log_dir}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Controller, once: the JUnit file into place, then the status lists and the summary.

    SIGINT and SIGTERM wait until all of it is written: readers see the old set or the new one."""
    final = config.stash.get(JUNIT, None)
    temporary = Path(config.option.xmlpath) if final else None
    if final is None or temporary is None or not temporary.exists():
        return
    cfg = config.stash.get(CONFIG, None)
    with signals_deferred():
        os.replace(temporary, final)
        conflict = report.owner_conflict(cfg.status_dir, cfg.image.full_name, bool(config.getoption("status_dir")))
        if conflict:
            outcomes = report.read_junit(final)
            config.get_terminal_writer().line(f"status lists not written: {conflict}", yellow=True)
        else:
            outcomes = report.update_status_from_junit(final, cfg.status_dir, cfg.image.full_name)
        report.atomic_write(final.with_name("summary.md"), report.markdown_summary(outcomes))


@contextlib.contextmanager
def signals_deferred():
    deferred = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, deferred)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def terminate_as_interrupt(signum, frame) -> None:
    """SIGTERM (CI cancelling a job) ends the run like Ctrl-C: builds stopped, results written."""
    raise KeyboardInterrupt(f"signal {signum}")


