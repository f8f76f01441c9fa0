"""Probe part: where the package could be loaded from, and the bytecode beside it.

Every directory an import could search (in the order start-up builds the path), what each one offers
for `import <name>` (asked of the interpreter's own path hooks, kept before any start-up code ran), the
start-up hook files there, which copies an import could load and which come after the loaded one, and a
check of every `.pyc` a copy holds against its source. Run by the probe's trusted parent, which never
runs the image's code.

Stdlib only, any Python 3.6+: sent into the image ahead of helpers/verify/probe.py as one script."""
import ast
import hashlib
import importlib.machinery
import importlib.util
import marshal
import os
import site
import sys

_compile, _loads, _sha1 = compile, marshal.loads, hashlib.sha1
_listdir, _isdir, _isfile, _join, _realpath = os.listdir, os.path.isdir, os.path.isfile, os.path.join, \
    os.path.realpath
EXTENSION_LOADER = importlib.machinery.ExtensionFileLoader
PATH_HOOKS = list(sys.path_hooks)         # the interpreter's own, before any start-up code could add one
METADATA = (".dist-info", ".egg-info")


def real(path, _cache={}):      # noqa: B006 - a memo shared by every call
    """A path's real path (memoised: thousands of code objects name the same few files)."""
    if path not in _cache:
        _cache[path] = _realpath(path) if path.startswith("/") else path
    return _cache[path]


def interesting(name, import_name):
    """The entries of a search directory that matter: copies of the package, start-up hooks and metadata."""
    return (name == import_name or name.startswith(import_name + ".") or name.endswith((".pth", ".egg-link"))
            or name.startswith(("sitecustomize", "usercustomize", "__editable__"))
            or name.endswith(METADATA) and project_key(name.split("-")[0]) == project_key(import_name))


def project_key(name):
    return name.lower().replace("-", "_").replace(".", "_")


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


def cwd_dirs(args):
    """Where a `python -m` or `python -c` started by the image would look first: its working directories."""
    return [real(d) for d in [os.getcwd()] + list(args.get("extra_dirs") or []) if _isdir(d)]


def search_dirs(args):
    """Every directory an import of the package could search, in the order start-up builds it."""
    dirs = cwd_dirs(args) + [p for p in sys.path if p]
    for folder in site_dirs():
        dirs.append(folder)
        dirs.extend(pth_paths(folder))
    return unique_dirs(dirs)


def unique_dirs(dirs):
    seen, ordered = set(), []
    for d in dirs:
        path = real(d)
        if path not in seen and (_isdir(path) or _isfile(path)):    # a zip archive on the path is a file
            seen.add(path)
            ordered.append(path)
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
            if n.endswith(METADATA):
                continue
            path = _join(d, n, "__init__.py") if kind == "dir" else _join(d, n)
            try:
                with open(path, "rb") as f:
                    texts[path] = f.read(1 << 16).decode("utf-8", "replace")
            except OSError:
                continue
    return texts


def offered_copy(folder, import_name):
    """What one search directory offers for `import <name>`, asked of the interpreter's own path hooks
    (the import system's order inside a directory: package, extension module, source, bytecode):
    {"dir", "path", "kind"} or None. A namespace portion is not a copy: it is used only when no
    directory offers a package or a module."""
    for hook in PATH_HOOKS:
        try:
            finder = hook(folder)
        except Exception:
            continue
        try:
            spec = finder.find_spec(import_name)
        except Exception:
            return None
        if spec is None or spec.loader is None or not spec.origin or not spec.origin.startswith("/"):
            return None
        if type(spec.loader).__name__ == "zipimporter":
            return {"dir": folder, "path": spec.origin, "kind": "zip archive"}
        package = spec.submodule_search_locations is not None
        path = os.path.dirname(spec.origin) if package else spec.origin
        kind = "extension module" if type(spec.loader) is EXTENSION_LOADER else "package" if package else "module"
        return {"dir": folder, "path": real(path), "kind": kind}
    return None


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
                    found.append({"dir": os.path.dirname(path), "path": real(target), "kind": "finder"})
    return found


def rank_copies(offered, order, first_dirs, loaded):
    """Split the copies into those an import could load (in a working directory a start would put first,
    or on the search path no later than the loaded one) and those after it, which no import loads. An
    import finder's copy (PEP 660) ranks after the whole path: the path's finder is asked first."""
    position = {d: i for i, d in enumerate(order)}

    def rank(copy):
        return len(order) if copy["kind"] == "finder" else position.get(copy["dir"])
    loaded_rank = next((rank(c) for c in offered if c["path"] == loaded), None)
    if loaded_rank is None and loaded:
        loaded_rank = len(order)            # reached through another import finder, after the path
    reachable, later = [], []
    for copy in offered:
        if copy["path"] == loaded or copy["dir"] in first_dirs or loaded_rank is None \
                or (rank(copy) is not None and rank(copy) <= loaded_rank):
            reachable.append(copy)
        elif rank(copy) is not None:
            later.append(copy)
    return reachable, later


def provisional_copies(offered, first_dirs):
    """Before start-up runs: the copies in a working directory, and the path's copies up to the first one."""
    chosen = []
    for copy in offered:
        chosen.append(copy)
        if copy["dir"] not in first_dirs and copy["kind"] != "finder":
            break
    return [c for c in offered if c in chosen or c["dir"] in first_dirs]


def interpreter_id():
    """What identifies this interpreter's compiler: the hash of its executable and of its libpython."""
    digest = _sha1(("%s %s" % (sys.version, importlib.util.MAGIC_NUMBER.hex())).encode())
    paths = [real(sys.executable)] if sys.executable else []
    try:
        with open("/proc/self/maps") as f:
            paths += sorted({line.split()[-1] for line in f if "libpython" in line and line.split()[-1][:1] == "/"})
    except OSError:
        pass
    for path in paths:
        try:
            with open(path, "rb") as f:
                digest.update(f.read())
        except OSError:
            pass
    return digest.hexdigest()[:16]


class Bytecode:
    """Checks every bytecode file Python would load from a copy against its source; a verdict the harness
    already holds (this interpreter, this source, this bytecode) is not computed again.

    The source is named by the commit's blob for its path when the harness gave one: a source that is not
    that blob fails the comparison of the copy with the commit anyway, so a timestamp `.pyc` is judged
    without reading its source (a checked-hash one needs the source's bytes for its header)."""

    def __init__(self, known, interpreter, blobs):
        self.known, self.interpreter, self.blobs = set(known or ()), interpreter, blobs or {}
        self.new, self.compiled, self.folders = [], 0, []  # type: list, int, list

    def verdicts(self, package_dir):
        """A `.pyc` beside the source (in `__pycache__`) is loaded when its header matches the source
        (timestamp and size, or a checked hash) or when it is an unchecked-hash file; then its code must
        be what compiling the source gives. A `.pyc` outside `__pycache__` is a sourceless module."""
        verdicts = {}  # type: dict
        tag = "." + sys.implementation.cache_tag
        top = len(package_dir) + 1
        for folder, _, files in os.walk(package_dir):
            if folder.endswith("/__pycache__"):
                self.folders.append(folder)
            pycs = [n for n in files if n.endswith(".pyc")]
            if not pycs:
                continue
            if not folder.endswith("/__pycache__"):
                verdicts.update((_join(folder, n)[top:], "sourceless module (no source beside it)") for n in pycs)
                continue
            parent = folder[:-len("/__pycache__")]
            for name in pycs:
                stem, dot, rest = name.partition(".")
                source = parent + "/" + stem + ".py"
                if not (dot + rest).startswith(tag):
                    continue                    # another interpreter's: never loaded here
                verdict = self.check(folder + "/" + name, source, self.blobs.get(source[top:]), rest)
                if verdict:
                    verdicts[(folder + "/" + name)[top:]] = verdict
        return verdicts

    def check(self, path, source, blob, rest):
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < 16 or data[:4] != importlib.util.MAGIC_NUMBER:
            return None                         # not loadable by this interpreter: it recompiles
        flags = int.from_bytes(data[4:8], "little")
        code = None
        if flags == 0:
            try:
                st = os.stat(source)
            except OSError:
                return None                     # an orphan: never loaded
            loaded = (int.from_bytes(data[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
                      and int.from_bytes(data[12:16], "little") == st.st_size & 0xFFFFFFFF)
        else:
            try:
                code = read_bytes(source)
            except OSError:
                return None
            loaded = not flags & 0b10 or data[8:16] == importlib.util.source_hash(code)   # unchecked: trusted blindly
        if not loaded:
            return None                         # stale: Python ignores it and compiles the source
        optimize = 2 if ".opt-2." in rest else 1 if ".opt-1." in rest else 0
        if blob is None:
            code = code if code is not None else read_bytes(source)
            blob = _sha1(b"blob %d\0" % len(code) + code).hexdigest()
        key = _sha1(("%s %d %s %s" % (self.interpreter, optimize, blob, _sha1(data[16:]).hexdigest())).encode()
                    ).hexdigest()[:24]
        if key in self.known:
            return None
        self.compiled += 1
        code = code if code is not None else read_bytes(source)
        try:
            if _loads(data[16:]) == _compile(code, source, "exec", dont_inherit=True, optimize=optimize):
                self.new.append(key)
                return None
        except Exception as e:
            return "unreadable bytecode (%s)" % type(e).__name__
        return "bytecode that is not its source's (%s hash)" % ("unchecked" if flags == 1 else "matching")


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def changed_since(started_ns, folders):
    """Files and folders below the given folders whose status changed since `started_ns` (the probe's start):
    a file written, added or renamed, or a folder an entry left, gets a ctime after it, and ctime cannot be
    set back without the power to set the system clock. The kernel stamps with a coarse clock (a tick
    behind the one the probe read), so a tick's margin is allowed; nothing writes there before the probe."""
    since = started_ns - 20000000
    changed = []
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in [""] + files:
                path = _join(root, name) if name else root
                try:
                    if os.lstat(path).st_ctime_ns >= since:
                        changed.append(path)
                except OSError:
                    continue
    return sorted(changed)
