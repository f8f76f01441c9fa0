"""Smoke checks: which deep imports and commands a commit's image gets, and what their failures mean.

The checks run in the verification container (helpers/verify/probe.py runs them, each with a deadline);
this module decides before the run what to ask for and, after it, reads the results. A module
of the project that the commit's tree does not have is skipped with a note (module paths move
over history); any other module (a kernel package, a compiled part of the project) is checked
when the image has it. An error that says the image's binaries do not fit together (an
`undefined symbol`, a missing GLIBCXX version) is `abi_mismatch`; one that only says there is no
GPU driver in the container is noted, not failed: no check here runs on a GPU.
"""
from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field

from helpers.profiles import Profile, command_words

ABI_ERROR = re.compile(
    r"undefined symbol|version `(GLIBC|GLIBCXX|CXXABI)_[\d.]+' not found|wrong ELF class|"
    r"binary incompatibility|compiled (using|against) .{0,40}(API|ABI|NumPy)|ELF load command",
    re.IGNORECASE)
NO_GPU_DRIVER = re.compile(
    r"libcuda\.so|libnvidia-ml\.so|found no nvidia driver|no cuda gpus are available|cuda driver initialization|"
    r"nvidia driver on your system|cudaGetDeviceCount|CUDA_ERROR_NO_DEVICE|no CUDA-capable device|"
    r"CUDA_ERROR_STUB_LIBRARY|driver is a stub library",
    re.IGNORECASE)
TAIL_LINES = 15
# The line that starts the final exception's message in a traceback (`ImportError: ...`, `torch.cuda.XError`).
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Failure)(?::|$)")
TURNED_OFF = ("turned off (--no-smoke-checks)",)


@dataclass(frozen=True)
class SmokePlan:
    """What the probe runs: modules, each with whether the commit's tree has it (None: another project's),
    and commands (words)."""

    imports: tuple[tuple[str, bool | None], ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()
    skipped: tuple[str, ...] = ()            # notes on what the commit's tree rules out

    @property
    def empty(self) -> bool:
        return not self.imports and not self.commands


def module_in_tree(module: str, profile: Profile, tree: dict[str, str]) -> bool | None:
    """Whether the commit's package tree has a module of the project; None for another project's module."""
    parts = module.split(".")
    if parts[0] != profile.import_name:
        return None
    rel = "/".join(parts[1:])
    if not rel:
        return True
    return f"{rel}.py" in tree or f"{rel}/__init__.py" in tree or any(p.startswith(rel + "/") for p in tree)


def run_module(words: tuple[str, ...]) -> str | None:
    """The module a command runs with `-m` (`python3 -m pkg.mod --help` -> pkg.mod)."""
    for first, second in zip(words, words[1:], strict=False):
        if first == "-m":
            return second
    return None


def plan(profile: Profile, tree: dict[str, str]) -> SmokePlan:
    """The profile's smoke checks for one commit, given its package tree (path -> blob).

    Every module is asked for: one the tree has must import; one it lacks is imported when the image
    has it anyway (a compiled part such as `vllm._C`, a kernel package), else noted. A command that
    runs (`-m`) a module of the project the tree lacks is skipped with a note."""
    imports = tuple((module, module_in_tree(module, profile, tree)) for module in profile.smoke_imports)
    commands, skipped = [], []
    for command in profile.smoke_commands:
        words = tuple(command_words(command))
        module = run_module(words)
        if module and module_in_tree(module, profile, tree) is False:
            skipped.append(f"{command}: {module} is not in the commit's tree, skipped")
        else:
            commands.append(words)
    return SmokePlan(imports, tuple(commands), tuple(skipped))


@dataclass
class SmokeVerdict:
    """The smoke checks' results read: what failed (and whether any failure is an ABI mismatch), what passed
    and what was only noted."""

    failures: list[str] = field(default_factory=list)
    abi: bool = False
    passed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None

    @property
    def category(self) -> str:
        return "abi_mismatch" if self.abi else "verify_smoke"

    def fail(self, what: str, output: str) -> None:
        """A failure with its error's last line first and the output's tail below (once per distinct error);
        only noted when the error itself (the final exception's whole message, not a warning before it) says
        there is no GPU driver: sgl_kernel's ImportError lists each load it tried, `libcuda.so.1` among them."""
        error = last_line(output)
        if NO_GPU_DRIVER.search(final_error(output)) and not ABI_ERROR.search(output):
            self.notes.append(f"{what}: needs a GPU driver, not checked here ({error})")
            return
        self.abi = self.abi or bool(ABI_ERROR.search(output))
        seen = any(f.split("\n", 1)[0].endswith(f": {error}") for f in self.failures)
        shown = tail(output)
        self.failures.append(what + (f": {error}" if error else "") +
                             ("" if seen or shown.strip() == error else f"\n{indent(shown)}"))

    def describe(self) -> str:
        timing = f" in {self.seconds:.2f} s" if self.seconds is not None else ""
        if self.failures:
            text = "\n".join(self.failures)
        else:
            text = (f"{len(self.passed)} passed{timing}: {', '.join(self.passed)}" if self.passed
                    else f"none run{timing}")
        return text + (f"\nnoted: {'; '.join(self.notes)}" if self.notes else "")


def read_results(plan_: SmokePlan, results: dict | None) -> SmokeVerdict:
    """The probe's smoke results against the plan: each module imported, each command exited 0."""
    verdict = SmokeVerdict(notes=list(plan_.skipped))
    if plan_.empty:
        return verdict
    if not results:
        verdict.failures.append("the probe ran no smoke checks (it stopped before them)")
        return verdict
    verdict.seconds = results.get("seconds")
    if results.get("driver_stub"):
        verdict.notes.append(f"no GPU driver here: the CUDA stub {results['driver_stub']} stood in for libcuda.so.1")
    in_tree = dict(plan_.imports)
    for entry in results.get("imports") or []:
        read_import(verdict, entry, in_tree.get(entry.get("name")))
    for entry in results.get("commands") or []:
        read_command(verdict, entry)
    return verdict


def read_import(verdict: SmokeVerdict, entry: dict, in_tree: bool | None) -> None:
    name, status = entry.get("name", "?"), entry.get("status")
    if status == "ok":
        verdict.passed.append(f"import {name}")
    elif status == "absent":
        if in_tree:
            verdict.failures.append(f"import {name}: the commit's tree has it, the image cannot find it")
        else:
            verdict.notes.append(f"import {name}: " + ("not installed, skipped" if in_tree is None else
                                                       "not in the commit's tree, skipped"))
    elif status == "timeout":
        verdict.failures.append(f"import {name}: still running after {entry.get('seconds', '?')} s (a hang)"
                                + below(entry.get("output", "")))
    elif status == "crashed":
        output = entry.get("output") or ""
        fatal = next((line for line in output.splitlines() if line.startswith("Fatal Python error")), "")
        verdict.abi = verdict.abi or bool(ABI_ERROR.search(output))
        verdict.failures.append(f"import {name}: the interpreter died ({exit_text(entry.get('exit'))})"
                                + (f": {fatal}" if fatal else "") + below(output))
    else:
        verdict.fail(f"import {name} failed", entry.get("output") or str(status))


def read_command(verdict: SmokeVerdict, entry: dict) -> None:
    command = " ".join(entry.get("argv") or [])
    status, output = entry.get("status"), entry.get("output") or ""
    if status == 0:
        verdict.passed.append(command)
    elif status == "timeout":
        verdict.failures.append(f"{command}: still running after {entry.get('seconds', '?')} s (a hang)"
                                + below(output))
    elif isinstance(status, int):
        verdict.fail(f"{command} {exit_text(status)}", output)
    else:
        verdict.fail(f"{command}: {status}", output)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = [line for line in text.rstrip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def final_error(text: str) -> str:
    """The final exception's message, from its `SomeError:` line to the end (the last line when none is found)."""
    lines = text.rstrip().splitlines()
    start = next((i for i in range(len(lines) - 1, -1, -1) if EXCEPTION_LINE.match(lines[i])), None)
    return "\n".join(lines[start:]) if start is not None else last_line(text)


def last_line(text: str) -> str:
    return tail(text, 1).strip()[:300]


def exit_text(status: object) -> str:
    """`exited with 3`, or `killed by SIGSEGV` for a negative status (a signal)."""
    if isinstance(status, int) and status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with {status}"


def below(output: str) -> str:
    shown = tail(output)
    return f"\n{indent(shown)}" if shown else ""


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
