"""Probe: runs INSIDE the image (any Python 3.6+) and reports what `import <package>` loads there.

Started as `python3 -S -c <this file> <json args> <nonce>` in one container run with the
entrypoint overridden; it must not import anything from the harness. The image is untrusted,
so the probe works in two phases:

1. Trusted: `-S` means no `.pth` line, `sitecustomize` or `usercustomize` of the image has run
   yet. The probe keeps its own references to what it needs, lists every directory an import
   could search (with the names that matter there), reads the start-up hook files it finds, and
   checks the bytecode beside every copy of the package against its source.
2. Image start-up, then the import: `site.main()` runs the image's start-up hooks exactly as a
   normal start would; the probe records what they changed in the import machinery, imports
   the package (and the profile's modules) and reports, per loaded module, its spec's origin,
   its loader and any function the module's source defines that is not that source's code.

Last, the smoke checks (helpers/smoke.py plans them) run in child processes of the probe, each
with a deadline: the deep imports in one child interpreter started as the image starts Python
(a crash or a hang ends only that child; the rest go on in a new one), then each command.

The facts go out on the original stdout descriptor, tagged with a nonce given on the command
line (removed from `sys.argv` before any image code runs): the trusted phase's as soon as they
are known (the harness starts reading the copies they name), then all of them; then `os._exit`
ends the process, so no `atexit` handler can print anything after them. The harness reads the files
themselves from outside the image and only cross-checks these facts.
"""
import ast
import builtins
import importlib.machinery
import importlib.util
import json
import marshal
import os
import signal
import site
import subprocess
import sys
import time
import traceback

MARK = "HARNESS-FACTS:"
EARLY = "HARNESS-EARLY:"      # the trusted phase's facts, sent as soon as they are known
_write, _exit, _dumps, _compile, _loads = os.write, os._exit, json.dumps, compile, marshal.loads
_Popen, _monotonic, _killpg = subprocess.Popen, time.monotonic, os.killpg
_listdir, _isdir, _isfile, _join, _realpath = os.listdir, os.path.isdir, os.path.isfile, os.path.join, \
    os.path.realpath
SOURCE_LOADER = importlib.machinery.SourceFileLoader
EXTENSION_LOADER = importlib.machinery.ExtensionFileLoader
LOADER_METHODS = {name: SOURCE_LOADER.__dict__.get(name) for name in ("exec_module", "get_code", "source_to_code",
                                                                      "get_data")}


def interesting(name, import_name):
    """The entries of a search directory that matter: copies of the package and start-up hooks."""
    return (name == import_name or name.startswith(import_name + ".") or name.endswith((".pth", ".egg-link"))
            or name.startswith(("sitecustomize", "usercustomize", "__editable__")))


def venv_site_dirs():
    """A virtual environment's site-packages, as site.venv() would find it (before 3.11 only site.main()
    moves sys.prefix into the environment, and the trusted phase runs before it)."""
    exe_dir = os.path.dirname(sys.executable or "")
    for prefix in (exe_dir, os.path.dirname(exe_dir)):
        if _isfile(_join(prefix, "pyvenv.cfg")):
            version = "python%d.%d" % sys.version_info[:2]
            return [_join(prefix, lib, version, "site-packages") for lib in ("lib", "lib64")]
    return []


def site_dirs():
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    dirs += [d for d in venv_site_dirs() if d not in dirs]
    try:
        if site.check_enableusersite():
            dirs.append(site.getusersitepackages())
    except Exception:
        pass
    return dirs


def pth_paths(folder):
    """The directories the `.pth` files of a site directory add, as site.addpackage reads them."""
    added = []  # type: list
    try:
        names = sorted(n for n in _listdir(folder) if n.endswith(".pth"))
    except OSError:
        return added
    for name in names:
        try:
            with open(_join(folder, name), encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("#") or line.startswith(("import ", "import\t")) or not line.strip():
                continue
            path = _join(folder, line.rstrip())
            if _isdir(path):
                added.append(path)
    return added


def search_dirs(args):
    """Every directory an import of the package could search, in the order start-up builds it."""
    dirs = [os.getcwd()] + [p for p in sys.path if p]
    for folder in site_dirs():
        dirs.append(folder)
        dirs.extend(pth_paths(folder))
    dirs.extend(args.get("extra_dirs") or [])
    seen, ordered = set(), []
    for d in dirs:
        real = _realpath(d)
        if real not in seen and _isdir(real):
            seen.add(real)
            ordered.append(real)
    return ordered


def listing(dirs, import_name):
    found = {}
    for d in dirs:
        try:
            names = _listdir(d)
        except OSError:
            continue
        entries = {}
        for n in names:
            if interesting(n, import_name):
                path = _join(d, n)
                entries[n] = "link" if os.path.islink(path) else "dir" if _isdir(path) else "file"
        found[d] = entries
    return found


def hook_texts(found, package_copies):
    """The text of every start-up hook file and install link the listing found (not the package's copies)."""
    texts = {}
    for d, entries in found.items():
        for n, kind in entries.items():
            if _join(d, n) in package_copies or (kind == "dir" and not n.endswith("customize")):
                continue
            path = _join(d, n, "__init__.py") if kind == "dir" else _join(d, n)
            try:
                with open(path, "rb") as f:
                    texts[path] = f.read(1 << 16).decode("utf-8", "replace")
            except OSError:
                continue
    return texts


def copies(found, import_name):
    """Where a regular package or a module of that name sits, on any search directory."""
    suffixes = tuple(importlib.machinery.all_suffixes())
    result = []
    for d, entries in found.items():
        for n in entries:
            if n == import_name and any(_isfile(_join(d, n, "__init__" + s)) for s in suffixes):
                result.append(_join(d, n))
            elif n.startswith(import_name + ".") and n[len(import_name):] in suffixes:
                result.append(_join(d, n))
    return result


def pyc_verdicts(package_dir):
    """Every bytecode file Python would load from this copy, checked against its source.

    A `.pyc` beside the source (in `__pycache__`) is loaded when its header matches the source
    (timestamp and size, or a checked hash) or when it is an unchecked-hash file; then its code
    must be what compiling the source gives. A `.pyc` outside `__pycache__` is a sourceless
    module, loaded without any source at all."""
    verdicts = {}
    tag = sys.implementation.cache_tag
    for folder, _, files in os.walk(package_dir):
        for name in files:
            path = _join(folder, name)
            rel = os.path.relpath(path, package_dir).replace(os.sep, "/")
            if not name.endswith(".pyc"):
                continue
            if os.path.basename(folder) != "__pycache__":
                verdicts[rel] = "sourceless module (no source beside it)"
                continue
            stem, _, rest = name.partition(".")
            source = _join(os.path.dirname(folder), stem + ".py")
            if not rest.startswith(tag) or not _isfile(source):
                continue                    # another interpreter's, or an orphan: never loaded here
            verdict = check_pyc(path, source, rest)
            if verdict:
                verdicts[rel] = verdict
    return verdicts


def check_pyc(path, source, rest):
    with open(path, "rb") as f:
        data = f.read()
    with open(source, "rb") as f:
        code = f.read()
    if len(data) < 16 or data[:4] != importlib.util.MAGIC_NUMBER:
        return None                         # not loadable by this interpreter: it recompiles
    flags = int.from_bytes(data[4:8], "little")
    if flags == 0:
        st = os.stat(source)
        loaded = (int.from_bytes(data[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
                  and int.from_bytes(data[12:16], "little") == st.st_size & 0xFFFFFFFF)
    elif flags & 0b10:
        loaded = data[8:16] == importlib.util.source_hash(code)
    else:
        loaded = True                       # unchecked hash: trusted blindly by the import system
    if not loaded:
        return None                         # stale: Python ignores it and compiles the source
    optimize = 2 if ".opt-2." in rest else 1 if ".opt-1." in rest else 0
    try:
        if _loads(data[16:]) == _compile(code, source, "exec", dont_inherit=True, optimize=optimize):
            return None
    except Exception as e:
        return "unreadable bytecode (%s)" % type(e).__name__
    return "bytecode that is not its source's (%s hash)" % ("unchecked" if flags == 1 else "matching")


def machinery():
    """What start-up hooks can change to redirect or patch an import."""
    return {"meta_path": [repr(f) for f in sys.meta_path], "path_hooks": [repr(h) for h in sys.path_hooks],
            "import": builtins.__import__, "loader": dict(LOADER_METHODS),
            "trace": sys.gettrace() is not None or sys.getprofile() is not None}


def machinery_changes(before, after):
    changes = ["sys.meta_path gained %s" % f for f in after["meta_path"] if f not in before["meta_path"]]
    changes += ["sys.path_hooks gained %s" % h for h in after["path_hooks"] if h not in before["path_hooks"]]
    if after["import"] is not before["import"]:
        changes.append("builtins.__import__ was replaced")
    current = {name: SOURCE_LOADER.__dict__.get(name) for name in LOADER_METHODS}
    changes += ["SourceFileLoader.%s was replaced" % n for n in LOADER_METHODS if current[n] is not LOADER_METHODS[n]]
    if after["trace"]:
        changes.append("a trace or profile function is set")
    return changes


def defined_names(source_path):
    """Top-level functions and classes a module's source defines (also inside top-level if/try)."""
    with open(source_path, "rb") as f:
        tree = ast.parse(f.read())
    names, stack = set(), list(tree.body)  # type: set, list
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        for field in ("body", "orelse", "finalbody", "handlers"):
            stack.extend(n for n in getattr(node, field, []) if isinstance(n, ast.AST))
    return names


def foreign_code(module, origin, startup_files):
    """Functions the module's source defines whose code is not that source's (patched after load).

    A decorator may wrap a function in code of its own library (`contextlib`, `functools`): the
    wrapper is accepted when it leads (`__wrapped__`) to the source's code and was not itself
    written by start-up code (a `.pth` line, `sitecustomize` or a module they imported)."""
    found = []
    for name in sorted(defined_names(origin)):
        obj = module.__dict__.get(name)
        if isinstance(obj, type):
            members = [("%s.%s" % (name, k), v) for k, v in vars(obj).items() if hasattr(v, "__code__")]
        elif obj is not None and hasattr(obj, "__code__"):
            members = [(name, obj)]
        else:
            members = []
        for qual, func in members:
            outer = func.__code__.co_filename
            inner = func
            while hasattr(inner, "__wrapped__") and inner.__wrapped__ is not inner:
                inner = inner.__wrapped__
            inner_file = getattr(getattr(inner, "__code__", None), "co_filename", "")
            if outer.startswith("<") or _realpath(outer) in startup_files or (
                    _realpath(outer) != origin and _realpath(inner_file) != origin):
                found.append("%s (code from %s)" % (qual, outer))
    return found


def loaded_modules(import_name, startup_files):
    report = {}
    for name, module in sorted(sys.modules.items()):
        if name != import_name and not name.startswith(import_name + "."):
            continue
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None)
        loader = getattr(spec, "loader", None)
        path = _realpath(origin) if origin and origin.startswith("/") else origin
        patched = sorted(set(getattr(loader, "__dict__", {})) & set(LOADER_METHODS))
        entry = {"origin": path, "file": getattr(module, "__file__", None),
                 "loader": type(loader).__module__ + "." + type(loader).__qualname__ if loader else None,
                 "source_loader": type(loader) is SOURCE_LOADER and not patched, "loader_patched": patched,
                 "extension": type(loader) is EXTENSION_LOADER}  # type: dict
        if path and path.endswith(".py"):
            try:
                entry["foreign"] = foreign_code(module, path, startup_files)
            except Exception as e:
                entry["foreign"] = ["cannot read its source: %s" % e]
        report[name] = entry
    return report


def startup_modules(before):
    """Modules that start-up code imported, outside the standard library, with their files."""
    stdlib = _realpath(os.path.dirname(os.__file__))
    found = {}
    for name in set(sys.modules) - before:
        path = getattr(sys.modules[name], "__file__", None)
        if path and not _realpath(path).startswith(stdlib + "/"):
            found[name] = _realpath(path)
    for name in ("sitecustomize", "usercustomize"):
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            found[name] = _realpath(path)
    return found


def distribution_facts(name):
    facts = {}  # type: dict
    try:
        from importlib import metadata
        dist = metadata.distribution(name)
    except Exception as e:  # no importlib.metadata, or not installed
        facts["dist_error"] = "%s: %s" % (type(e).__name__, e)
        return facts
    facts["version"] = dist.version
    location = getattr(dist, "_path", None)
    facts["dist_info"] = _realpath(str(location)) if location else None
    return facts


def finder_copies(texts, import_name):
    """Where PEP 660 import finders (`__editable___*_finder.py`) map the package, read without running them."""
    found = []
    for path, text in texts.items():
        if not os.path.basename(path).startswith("__editable__") or not path.endswith("_finder.py"):
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MAPPING" for t in node.targets):
                try:
                    mapping = ast.literal_eval(node.value)
                except ValueError:
                    continue
                target = mapping.get(import_name) if isinstance(mapping, dict) else None
                if isinstance(target, str) and _isdir(target):
                    found.append(_realpath(target))
    return found


def trusted_phase(args):
    import_name = args["import_name"]
    dirs = search_dirs(args)
    found = listing(dirs, import_name)
    facts = {"python": sys.version.split()[0], "executable": sys.executable, "cwd": os.getcwd(),
             "cache_tag": sys.implementation.cache_tag, "path_before": list(sys.path), "site_dirs": site_dirs(),
             "search_dirs": dirs, "listing": found, "copies": copies(found, import_name)}
    facts["hook_texts"] = hook_texts(found, facts["copies"])
    facts["copies"] += [c for c in finder_copies(facts["hook_texts"], import_name) if c not in facts["copies"]]
    facts["pycs"] = {c: pyc_verdicts(c) for c in facts["copies"] if _isdir(c)}
    return facts


def file_states(folder):
    """Each file's (size, mtime, ctime, inode) below a folder: a rewrite changes its ctime whatever
    else the writer restores."""
    states = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = _join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            states[path] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return states


def changed_files(before, folders):
    """Files of the given folders added, removed or rewritten since `before` was taken."""
    after = {}
    for folder in folders:
        after.update(file_states(folder))
    paths = set(before) | set(after)
    return sorted(p for p in paths if before.get(p) != after.get(p))


def emit(marker, nonce, facts):
    """One line on the original stdout descriptor, through the references kept before any image code ran."""
    data = ("\n%s%s %s\n" % (marker, nonce, _dumps(facts))).encode("utf-8", "replace")
    while data:
        data = data[_write(1, data):]


def import_phase(args, facts, states):
    import_name = args["import_name"]
    before, modules_before = machinery(), set(sys.modules)
    site.main()                     # the image's .pth lines, sitecustomize, usercustomize run here
    facts["path"] = list(sys.path)
    facts["startup_modules"] = startup_modules(modules_before)
    facts["startup_changes"] = machinery_changes(before, machinery())
    facts["preloaded"] = sorted(n for n in sys.modules if n == import_name or n.startswith(import_name + "."))
    facts.update(distribution_facts(args["distribution"]))
    try:
        spec = importlib.util.find_spec(import_name)      # what the finders (editable ones too) would load
        origin = spec.origin if spec else None
        facts["spec_origin"] = _realpath(origin) if origin and origin.startswith("/") else None
    except Exception as e:
        facts["spec_error"] = "%s: %s" % (type(e).__name__, e)
    for name in [import_name] + list(args.get("modules") or []):
        try:
            __import__(name)
        except BaseException:
            facts.setdefault("import_errors", {})[name] = traceback.format_exc()[-3000:]
    module = sys.modules.get(import_name)
    if module is not None and getattr(module, "__file__", None) is None:
        facts.setdefault("import_errors", {})[import_name] = "%s imported as a namespace package from %s" % (
            import_name, list(getattr(module, "__path__", [])))
    facts["modules"] = loaded_modules(import_name, set(facts["startup_modules"].values()))
    facts["changed_at_run"] = changed_files(states, [c for c in facts["copies"] if _isdir(c)])
    origin = facts["modules"].get(import_name, {}).get("origin") or ""
    loaded = os.path.dirname(origin) if origin.endswith("/__init__.py") else ""
    if loaded and loaded not in facts["pycs"]:     # reached through an import finder, not a search directory
        facts["pycs"][loaded] = pyc_verdicts(loaded)
    return facts


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


def main(argv):
    nonce = argv.pop()
    args = json.loads(argv.pop())
    del sys.argv[1:]
    if not args.get("import_from_workdir"):
        # Import from a neutral directory: never from the probe's working directory.
        sys.path[:] = [p for p in sys.path if p not in ("", ".")]
    facts = {}
    try:
        facts = trusted_phase(args)
        emit(EARLY, nonce, facts)           # the harness starts reading the copies from outside now
        states = {}
        for copy in facts["copies"]:
            if _isdir(copy):
                states.update(file_states(copy))
        facts = import_phase(args, dict(facts), states)
    except BaseException:
        facts["probe_error"] = traceback.format_exc()[-3000:]
    if args.get("smoke_imports") or args.get("smoke_commands"):
        try:
            facts["smoke"] = smoke_phase(args)
        except BaseException:
            facts["smoke_error"] = traceback.format_exc()[-3000:]
    emit(MARK, nonce, facts)
    _exit(0)


if __name__ == "__main__":
    main(list(sys.argv))
