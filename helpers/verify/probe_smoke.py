"""Probe part: the smoke checks, run last in the verification container, each in a child process with a
deadline: the deep imports in one child interpreter started as the image starts Python (a crash or a hang
ends only that child; the rest go on in a new one), then each command. helpers/verify/smoke.py plans them.

Stdlib only, any Python 3.6+: sent into the image ahead of helpers/verify/probe.py as one script."""
import json
import os
import signal
import subprocess
import sys
import time

_Popen, _monotonic, _killpg, _dumps = subprocess.Popen, time.monotonic, os.killpg, json.dumps
_isfile, _join = os.path.isfile, os.path.join


# The child interpreter of the deep imports: a marked line as each module starts and with its result.
SMOKE_IMPORTER = r"""
import importlib, importlib.util, json, os, sys, traceback
names, mark = json.loads(sys.argv[1]), sys.argv[2]
del sys.argv[1:]
for name in names:
    print(mark + json.dumps({"start": name}), flush=True)
    result = {"name": name, "status": "ok"}
    try:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                found = False
            else:
                raise
        if found:
            importlib.import_module(name)
        else:
            result["status"] = "absent"
    except BaseException:
        kind, error, frames = sys.exc_info()
        frames = [f for f in traceback.extract_tb(frames) if not f.filename.startswith("<")
                  and not f.filename.endswith("importlib/__init__.py")]
        text = "".join(traceback.format_list(frames) + traceback.format_exception_only(kind, error))
        result = {"name": name, "status": "error", "output": text[-4000:]}
    print(mark + json.dumps(result), flush=True)
os._exit(0)     # threads an imported module started do not keep it running to the deadline
"""


def run_with_deadline(argv, deadline, cwd=None, env=None):
    """A child process with its own session: (exit status or "timeout", its output, seconds)."""
    start = _monotonic()
    try:
        proc = _Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        return "cannot start (%s)" % e, "", 0.0
    try:
        out, _ = proc.communicate(timeout=deadline)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            _killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:          # a process left the session and holds the pipe
            out = b""
        status = "timeout"
    return status, out.decode("utf-8", "replace"), round(_monotonic() - start, 2)


# Where CUDA toolkits keep the driver's link-time stub (an image built FROM a -devel image has one).
CUDA_STUBS = ("/usr/local/cuda/lib64/stubs/libcuda.so", "/usr/local/cuda/targets/x86_64-linux/lib/stubs/libcuda.so",
              "/usr/local/cuda/targets/sbsa-linux/lib/stubs/libcuda.so")


def driver_stub_env():
    """Without a GPU driver in the container, the toolkit's stub stands in for `libcuda.so.1` in the smoke
    checks' children: a kernel package linked against the driver then loads far enough for the dynamic
    linker to check its symbols (an ABI mismatch behind the missing driver would otherwise hide). Calls
    into the stub fail at run time, as they would without a driver. (environment, stub) or (None, None)."""
    import ctypes
    try:
        ctypes.CDLL("libcuda.so.1")
        return None, None                   # a real driver: nothing to stand in for
    except OSError:
        pass
    stub = next((path for path in CUDA_STUBS if _isfile(path)), None)
    if stub is None:
        return None, None
    try:
        import tempfile
        folder = tempfile.mkdtemp(prefix="harness-cuda-stub-")
        os.symlink(stub, _join(folder, "libcuda.so.1"))
    except OSError:
        return None, None
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = folder + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env, stub


def smoke_imports(names, deadline, env=None):
    """Each module imported in a child interpreter; one that crashes or hangs it is reported with the
    child's output since it started, and the rest go on in a new child. Also each child's end (its exit
    status, or "timeout", and its seconds)."""
    results, runs, mark = [], [], "SMOKE-%s:" % os.urandom(8).hex()
    python = sys.executable or "python3"
    while names:
        status, out, seconds = run_with_deadline([python, "-X", "faulthandler", "-c", SMOKE_IMPORTER,
                                                  _dumps(names), mark], deadline, env=env)
        runs.append([status, seconds])
        current, lines = None, []
        for line in out.splitlines():
            if not line.startswith(mark):
                lines.append(line)
                continue
            entry = json.loads(line[len(mark):])
            if "start" in entry:
                current, lines = entry["start"], []
            else:
                results.append(entry)
                current = None
        done = [r["name"] for r in results]
        if current is None:
            missing = [n for n in names if n not in done]
            if missing:         # the child ended before it started them: nothing more to learn here
                results += [{"name": n, "status": "error", "output": "the interpreter exited (%s) before "
                             "importing it:\n%s" % (status, out[-2000:])} for n in missing]
            break
        results.append({"name": current, "status": "timeout" if status == "timeout" else "crashed",
                        "exit": status, "output": "\n".join(lines)[-4000:], "seconds": seconds})
        names = [n for n in names if n not in done and n != current]
    return results, runs


def smoke_phase(args):
    """The profile's deep imports, then its commands, each with the deadline; the time they took."""
    start, deadline = _monotonic(), float(args.get("smoke_timeout") or 300)
    env, stub = driver_stub_env()
    imports, runs = smoke_imports(list(args.get("smoke_imports") or []), deadline, env)
    report = {"imports": imports, "import_runs": runs, "commands": [], "driver_stub": stub}
    for argv in args.get("smoke_commands") or []:
        status, out, seconds = run_with_deadline(list(argv), deadline, args.get("command_cwd") or None, env)
        report["commands"].append({"argv": argv, "status": status, "output": out[-4000:], "seconds": seconds})
    report["seconds"] = round(_monotonic() - start, 3)
    return report
