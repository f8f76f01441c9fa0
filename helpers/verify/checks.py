"""Verify: each check is a pure comparison of an image's facts (helpers/verify/image_facts.py) with the commit.

The decisive check compares the code, not the claim: every copy of the package an import could
reach, read from outside the image, against `git ls-tree` of the commit (patched files against
their patched bytes), with nothing beside it that Python would load instead; the probe's report
of what the import loaded is cross-checked against those copies.
"""
from __future__ import annotations

import ast
import fnmatch
import json
import posixpath
import re
import urllib.parse
from dataclasses import dataclass
from typing import NamedTuple

from packaging.utils import canonicalize_name

from helpers.profiles import Profile
from helpers.verify.image_facts import Facts, FileFacts, blob_hash, loaded_from
from helpers.verify.smoke import ABI_ERROR, SmokePlan, read_results, tail

REVISION_LABEL = "org.opencontainers.image.revision"
STARTUP_ENV = ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONSAFEPATH", "PYTHONINSPECT")
EXTENSION = re.compile(r"\.(so|pyd)$|\.cpython-[^/]*\.so$|\.abi3\.so$")


@dataclass(frozen=True)
class Expected:
    sha: str
    profile: Profile
    tree: dict[str, str]            # path under the package dir -> blob hash
    version: str | None = None      # the version the build was given (versioned from git by its configuration)
    smoke: SmokePlan = SmokePlan()  # the deep imports and commands asked of the image
    # What the commit's build configuration says (helpers/source/build_config.py), by path in the package: the files
    # its build writes with the version, and the compiled modules it declares (paths without their suffix).
    version_files: tuple[str, ...] = ()
    products: frozenset[str] = frozenset()
    versioning: str = ""            # how the configuration versions it, or why not from git (a sentence)

    def is_product(self, path: str) -> bool:
        """A compiled module file (`x.cpython-311-x86_64-linux-gnu.so`) at a module path the build declares."""
        if not EXTENSION.search(path):
            return False
        folder, name = posixpath.split(path)
        return posixpath.join(folder, name.split(".")[0]) in self.products

    def accepted(self, path: str) -> bool:
        """A file the build adds to the package: a declared product, or what the profile says no
        configuration names (generated_files, build_products)."""
        return self.is_product(path) or declared(self.profile, path)


@dataclass(frozen=True)
class CheckResult:
    """One named fact of the image (`actual`), what the commit needs it to be, and a sentence about it."""

    category: str
    actual: object
    expected: object
    found: str

    @property
    def passed(self) -> bool:
        return self.actual == self.expected

    def line(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'} {self.category}: {self.found}"

    def why(self) -> str:
        """The assertion message: the category first (the reports read it), then what was found."""
        return f"{self.category}: {self.found}"


class Checks(NamedTuple):
    """Every check of one image, by name, in the order a failure's category is chosen."""

    label: CheckResult
    proof_file: CheckResult
    source_tree: CheckResult
    imported: CheckResult
    editable_install: CheckResult
    version: CheckResult
    smoke: CheckResult
    change: CheckResult = CheckResult("change_not_in_image", True, True, "not judged")  # helpers/verify/changes.py

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self)

    def first_failure(self) -> CheckResult | None:
        return next((c for c in self if not c.passed), None)


def expected_tree(profile: Profile, ls_tree: dict[str, str], patched: dict[str, bytes],
                  written: tuple[str, ...] = ()) -> dict[str, str]:
    """Blob hashes relative to the package directory, patched files replaced by their new content; the files
    the build writes itself (`written`: its version files, checked by content) and the profile's
    generated files and build products left out."""
    prefix = profile.package_path + "/"
    tree = {path[len(prefix):]: blob for path, blob in ls_tree.items() if path.startswith(prefix)}
    for path, content in patched.items():
        if path.startswith(prefix):
            tree[path[len(prefix):]] = blob_hash(content)
    return {p: h for p, h in tree.items() if not declared(profile, p) and p not in written}


def declared(profile: Profile, path: str) -> bool:
    """A file a build writes into the package (generated source, compiled extension), not compared."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in profile.generated_files + profile.build_products)


def check_label(facts: Facts, want: Expected) -> CheckResult:
    found = facts.labels.get(REVISION_LABEL)
    return CheckResult("verify_label", found, want.sha, f"label {REVISION_LABEL}={found or '(none)'}")


def check_proof_file(facts: Facts, want: Expected) -> CheckResult:
    proof = facts.files.get(want.profile.proof_file)
    if proof is None or proof.text is None:
        return CheckResult("verify_proof_file", None, want.sha, f"{want.profile.proof_file}: not in the image")
    return CheckResult("verify_proof_file", proof.text.strip(), want.sha,
                       f"{want.profile.proof_file} holds {proof.text.strip()[:80]!r}")


def check_import(facts: Facts, want: Expected) -> CheckResult:
    errors = dict(facts.probe.get("import_errors") or {})
    if facts.probe.get("probe_error"):
        errors["(probe)"] = facts.probe["probe_error"]
    if errors:
        name, error = next(iter(errors.items()))
        category = "abi_mismatch" if ABI_ERROR.search(error) else "verify_import"
        return CheckResult(category, errors, {}, f"import {name} failed:\n{tail(error)}")
    names = [want.profile.import_name, *want.profile.check_modules]
    loaded = loaded_from(facts.probe, want.profile.import_name)
    return CheckResult("verify_import", errors, {}, f"import {', '.join(names)} -> {loaded or '?'}")


def install_kind(facts: Facts, want: Expected) -> tuple[str, str | None]:
    """How the distribution is installed, and the source directory an editable install points at."""
    dist_info = facts.probe.get("dist_info") or ""
    direct = facts.files.get(f"{dist_info}/direct_url.json") if dist_info else None
    data = json.loads(direct.text) if direct and direct.text else {}
    wanted = canonicalize_name(want.profile.distribution)
    listing = facts.probe.get("listing") or {}
    names = [n for entries in listing.values() for n in entries]
    if (data.get("dir_info") or {}).get("editable") and str(data.get("url", "")).startswith("file://"):
        path = urllib.parse.unquote(data["url"][len("file://"):])
        finders = (re.fullmatch(r"__editable___(\w+)_finder\.py", n) for n in names)
        finder = any(m and canonicalize_name(m.group(1)).startswith(wanted + "-") for m in finders)
        return ("PEP 660 editable (import finder)" if finder else "PEP 660/610 editable (.pth path)"), path
    for folder, entries in listing.items():
        for name in entries:
            if name.endswith(".egg-link") and canonicalize_name(name[:-9]) == wanted:
                link = facts.files.get(f"{folder}/{name}")
                target = (link.text or "").splitlines()[0].strip() if link and link.text else ""
                return "setup.py develop (egg-link)", target or None
    if data:
        return f"not editable (installed from {data.get('url', '?')})", None
    return "not editable", None


def check_editable_install(facts: Facts, want: Expected) -> CheckResult:
    if not want.profile.editable_required:
        return CheckResult("verify_editable_install", None, None, "not required by the profile")
    kind, source = install_kind(facts, want)
    loaded = loaded_from(facts.probe, want.profile.import_name)
    if source is None:
        where = facts.probe.get("dist_info") or facts.probe.get("dist_error") or "no metadata"
        return CheckResult("verify_editable_install", kind, "an editable install",
                           f"{want.profile.distribution}: {kind}; metadata at {where}; the imported copy lives at "
                           f"{loaded or '(nothing imported)'}")
    source = source.rstrip("/")
    subdir = want.profile.source_subdir
    package_rel = posixpath.relpath(want.profile.package_path, subdir or ".")
    pinned = not subdir or source.endswith("/" + subdir)
    expected = posixpath.normpath(posixpath.join(source, package_rel))
    found = f"{kind} of {source}; {want.profile.import_name} loaded from {loaded or '(nothing)'}"
    if not pinned:
        return CheckResult("verify_editable_install", source, f".../{subdir}", found + f" (not the source's {subdir}/)")
    return CheckResult("verify_editable_install", loaded, expected,
                       found + ("" if loaded == expected else f" (expected {expected})"))


def startup_hooks(facts: Facts) -> list[str]:
    """Every start-up hook the image has: environment variables, .pth files, customize modules."""
    hooks = [f"{k}={facts.env[k]}" for k in STARTUP_ENV if facts.env.get(k)]
    for folder, entries in (facts.probe.get("listing") or {}).items():
        for name in sorted(entries):
            if name.endswith(".pth") or name.startswith(("sitecustomize", "usercustomize")):
                hooks.append(f"{folder}/{name}")
    return hooks


def hook_code(facts: Facts, path: str) -> list[str]:
    """The code a hook file runs at start-up: a .pth file's import lines, a customize module whole."""
    found = facts.files.get(path)
    if found is None or found.text is None:
        return []
    if path.endswith(".pth"):
        return [line for line in found.text.splitlines() if line.startswith(("import ", "import\t"))]
    return [found.text]


def hook_findings(facts: Facts, want: Expected) -> list[str]:
    """Start-up code that reaches for the package: named in a hook, imported early, or import machinery replaced."""
    name = want.profile.import_name
    pattern = re.compile(rf"\b{re.escape(name)}\b")
    findings = []
    for hook in startup_hooks(facts):
        if "=" in hook.split("/")[0]:
            continue
        package_init = f"{hook}/__init__.py"
        for code in hook_code(facts, package_init if package_init in facts.files else hook):
            if pattern.search(code):      # an editable finder's own name (__editable___x_finder) is one word
                findings.append(f"{hook} names {name}: {code.strip()[:200]!r}")
    probe = facts.probe
    if probe.get("preloaded"):
        findings.append(f"start-up code imported {', '.join(probe['preloaded'])} before the probe did")
    findings += [c for c in probe.get("startup_changes") or [] if "gained" not in c]
    return findings


def copy_findings(want: Expected, path: str, files: dict[str, FileFacts], pycs: dict[str, str]) -> list[str]:
    """How one copy of the package differs from the commit: changed, missing, extra, shadowing files."""
    profile = want.profile
    if posixpath.basename(path) != profile.import_name:
        return [f"{path}: a module file named like the package shadows it"]
    code = [p for p in files if not p.startswith("__pycache__/") and "/__pycache__/" not in p]
    full = profile.editable_required
    missing = sorted(p for p in want.tree if p not in files and (full or p.endswith(".py")))
    differ = sorted(p for p in want.tree if p in files and files[p].blob != want.tree[p])
    extra = sorted(p for p in code if p not in want.tree and not want.accepted(p) and p not in want.version_files
                   and (full or p.endswith((".py", ".pyc")) or EXTENSION.search(p)))
    sources = {p[:-3] for p in want.tree if p.endswith(".py")}
    shadows = sorted(p for p in code if p.endswith(".pyc") or EXTENSION.search(p) and (
        not want.accepted(p) or posixpath.join(posixpath.dirname(p), posixpath.basename(p).split(".")[0])
        in sources))
    written = [problem for name in want.version_files for problem in version_file_problems(
        name, files.get(name), want.version, want.versioning)]
    parts = [f"{label} ({len(paths)}): {', '.join(paths[:20])}{' ...' if len(paths) > 20 else ''}"
             for label, paths in (("differ", differ), ("missing", missing),
                                  ("not in the commit", [p for p in extra if p not in shadows]),
                                  ("bytecode or extension modules loaded instead of source", shadows),
                                  ("bytecode that is not its source's",
                                   [f"{p}: {v}" for p, v in sorted(pycs.items())]),
                                  ("version files", written)) if paths]
    return [f"{path}: " + "; ".join(parts)] if parts else []


# What a version file may hold besides its version: docstrings, imports of typing, `if TYPE_CHECKING:` blocks and
# assignments of literals and type expressions (setuptools-scm's and hatch-vcs's templates of every era). A
# call, a definition or any other import is code the build's template never writes.
VERSION_NAMES = ("version", "__version__")
TYPE_NODES = (ast.Constant, ast.Tuple, ast.List, ast.Name, ast.Attribute, ast.Subscript, ast.Slice, ast.Load,
              ast.BinOp, ast.BitOr, ast.UnaryOp, ast.USub)


def version_file_problems(path: str, found: FileFacts | None, version: str | None, said_by: str) -> list[str]:
    """What is wrong with a version file the build writes: missing, or other than its template writes (code,
    another version). `version` None: the version is not known, only the file's shape is checked."""
    if found is None:
        return [f"{path}: missing (the build writes it: {said_by})"]
    if found.text is None:
        return [f"{path}: too large to be a version file"]
    if path.endswith(".txt"):
        text = found.text.strip()
        return [] if version is None or text == version else [f"{path} says {text[:60]!r}, the commit's is {version}"]
    try:
        body = ast.parse(found.text).body
    except (SyntaxError, ValueError) as e:
        return [f"{path} does not parse: {e}"]
    problems: list[str] = []
    versions = _version_assignments(body, problems)
    wrong = sorted({v for v in versions if not isinstance(v, str) or (version is not None and v != version)}, key=str)
    if wrong:
        problems.append(f"says version {', '.join(map(repr, wrong))[:80]}, the commit's is {version}")
    elif not versions:
        problems.append("assigns no version")
    return [f"{path}: {p}" for p in problems]


def _version_assignments(body: list[ast.stmt], problems: list[str], values: dict | None = None) -> list[object]:
    """The values assigned to `version`/`__version__` (a name assigned earlier in the file stands for its value:
    `__version__ = version`); anything a version template does not write, in `problems`."""
    versions: list[object] = []
    values = {} if values is None else values
    for node in body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.ImportFrom) and node.module in ("__future__", "typing") and not node.level or \
                isinstance(node, ast.Import) and all(a.name == "typing" for a in node.names):
            continue
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING", "False"):
            versions += _version_assignments(node.body + node.orelse, problems, values)
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else None
        value = getattr(node, "value", None)
        if targets is None or not all(isinstance(t, ast.Name) for t in targets) or \
                (value is not None and not all(isinstance(n, TYPE_NODES) for n in ast.walk(value))):
            problems.append(f"line {node.lineno} is code no version template writes: {ast.unparse(node)[:100]!r}")
            continue
        if value is None:
            continue
        try:
            assigned: object = ast.literal_eval(value)
        except ValueError:
            assigned = values.get(value.id, ast.unparse(value)) if isinstance(value, ast.Name) else ast.unparse(value)
        values.update((t.id, assigned) for t in targets)                     # type: ignore[attr-defined]
        if any(t.id in VERSION_NAMES for t in targets):                     # type: ignore[attr-defined]
            versions.append(assigned)
    return versions


def record_findings(facts: Facts, want: Expected, copy: str, files: dict[str, FileFacts]) -> list[str]:
    """An installed copy's files against its wheel's RECORD (what the installer wrote): a changed file or
    one the installer did not write (an extra module dropped in later) is found even where the commit's
    tree is silent, e.g. a data file a wheel carries."""
    dist_info = facts.probe.get("dist_info") or ""
    record = facts.files.get(f"{dist_info}/RECORD")
    if not record or not record.text or posixpath.dirname(dist_info) != posixpath.dirname(copy):
        return []
    base = posixpath.basename(copy)
    listed = {}
    for row in record.text.splitlines():
        parts = row.rsplit(",", 2)
        if len(parts) == 3 and parts[0].startswith(base + "/") and parts[1]:
            listed[parts[0][len(base) + 1:]] = parts[1]
    if not listed:
        return []                   # the distribution did not install this copy (an editable install's RECORD)
    changed = sorted(p for p, h in listed.items() if p in files and files[p].record != h)
    unlisted = sorted(p for p in files if p not in listed and "__pycache__/" not in p)
    parts = [f"{label} ({len(paths)}): {', '.join(paths[:20])}"
             for label, paths in (("differ from RECORD", changed), ("not in RECORD", unlisted)) if paths]
    return [f"{copy}: " + "; ".join(parts)] if parts else []


def module_findings(facts: Facts, want: Expected) -> list[str]:
    """Every loaded module of the package comes from the loaded copy, through a source loader, unpatched,
    holding every definition of its source; a namespace package's portions all lie in the loaded copy."""
    loaded = loaded_from(facts.probe, want.profile.import_name)
    findings = []
    if loaded and loaded not in facts.copies:
        findings.append(f"{want.profile.import_name} was loaded from {loaded}, which no import path leads to")

    def inside(path: str) -> bool:
        return bool(loaded) and (path == loaded or path.startswith(f"{loaded}/"))
    for name, module in (facts.probe.get("modules") or {}).items():
        origin = module.get("origin") or ""
        portions = module.get("portions")
        if module.get("alias_of"):
            if not is_package_alias(facts, name, module):
                findings.append(f"{name} is {module['alias_of']} (from {origin or module.get('loader')}), placed under "
                                f"{want.profile.import_name} by code that is not the package's own")
            continue
        rel = posixpath.relpath(origin, loaded) if loaded and origin.startswith("/") else ""
        if portions is not None:
            outside = [p for p in portions if not inside(p)]
            if outside or not portions:
                findings.append(f"{name} is a namespace package with portions outside {loaded}: {outside or '(none)'}")
            continue
        if not inside(origin):
            findings.append(f"{name} was loaded from {origin or module.get('loader')}, outside {loaded}")
        elif module.get("extension") and want.accepted(rel):
            continue
        elif module.get("loader_patched"):
            findings.append(f"{name} was loaded from {origin} by a loader whose "
                            f"{', '.join(module['loader_patched'])} start-up code replaced")
        elif not module.get("source_loader"):
            findings.append(f"{name} was loaded by {module.get('loader')} from {origin}, not from its source")
        findings += [f"{name}.{f} is not the code of {origin}" for f in module.get("foreign") or []]
    return findings


def is_package_alias(facts: Facts, name: str, module: dict) -> bool:
    """An alias the package makes itself: its own verified code writes sys.modules, the module is an installed
    library's or the standard library's (never start-up code's), and start-up code had not placed it."""
    return bool(module.get("alias_trusted")) and bool(facts.probe.get("alias_makers")) and \
        name not in (facts.probe.get("preloaded") or [])


def package_aliases(facts: Facts) -> list[str]:
    """The aliases the package makes (noted: `requests.packages.chardet` is charset_normalizer)."""
    aliases = [f"{name} is {module['alias_of']}" for name, module in (facts.probe.get("modules") or {}).items()
               if module.get("alias_of") and is_package_alias(facts, name, module)]
    if not aliases:
        return []
    makers = ", ".join(facts.probe.get("alias_makers") or [])
    return [f"aliases the package's own code ({makers}) makes: {', '.join(aliases[:8])}"
            f"{f' and {len(aliases) - 8} more' if len(aliases) > 8 else ''}"]


def later_copies(facts: Facts) -> list[str]:
    """Copies after the loaded one on the search path (another distribution's, say a Debian `python3-*`
    package's): no import loads them, so they are noted, each with the metadata found beside it."""
    notes = []
    for copy in facts.probe.get("later_copies") or []:
        folder = copy.get("dir", "")
        owners = [n.rsplit(".", 1)[0] for n in (facts.probe.get("listing") or {}).get(folder, {})
                  if n.endswith((".dist-info", ".egg-info"))]
        owner = f"of {', '.join(sorted(owners))}" if owners else "with no metadata beside it"
        notes.append(f"{copy.get('path')} ({copy.get('kind')} {owner}) comes after the loaded copy: never loaded")
    return notes


def runtime_changes(facts: Facts) -> list[str]:
    """Files of a copy that changed while the probe ran (the interpreter wrote no bytecode): the image's
    start-up code rewrites the package each time it starts, so the code that runs is not the code read."""
    changed = [path for path in facts.probe.get("changed_at_run") or []
               if any(path == copy or path.startswith(copy.rstrip("/") + "/") for copy in facts.copies)]
    return [f"start-up code changed {', '.join(changed[:10])} while the image ran"] if changed else []


def check_source(facts: Facts, want: Expected) -> CheckResult:
    """Every copy of the package an import could load is the commit's, and the import loads one of them."""
    if facts.tampering:
        return CheckResult("verify_source_mismatch", [facts.tampering], [], facts.tampering)
    if not facts.copies:
        missing = f"no copy of {want.profile.import_name} found in the image to compare"
        return CheckResult("verify_source_mismatch", [missing], [], missing)
    pycs = facts.probe.get("pycs") or {}
    findings = hook_findings(facts, want) + module_findings(facts, want) + runtime_changes(facts)
    findings += [f"{path}: a zip archive on the search path holds a copy that cannot be compared"
                 for path in facts.probe.get("zipped_copies") or []]
    if facts.probe.get("probe_error"):
        last = facts.probe["probe_error"].strip().splitlines()[-1]
        findings.append(f"the probe could not finish, so the copies an import could load are not all known ({last})")
    for path, files in facts.copies.items():
        findings += copy_findings(want, path, files, pycs.get(path) or {})
        findings += record_findings(facts, want, path, files)
    hooks = startup_hooks(facts)
    listed = f"; start-up hooks: {', '.join(hooks)}" if hooks else ""
    noted = "".join(f"\nnoted: {note}" for note in later_copies(facts) + package_aliases(facts))
    if findings:
        return CheckResult("verify_source_mismatch", findings, [],
                           f"vs {want.profile.package_path}@{want.sha[:12]}: " + " | ".join(findings) + listed + noted)
    return CheckResult("verify_source_mismatch", findings, [],
                       f"{len(want.tree)} files of {want.profile.package_path} identical to {want.sha[:12]} in "
                       f"{', '.join(facts.copies)}{build_additions(facts, want)}{listed}{noted}")


def build_additions(facts: Facts, want: Expected) -> str:
    """What the build added to the package that its configuration says it adds: the version files (checked by
    content) and the compiled modules it declares (accepted at exactly those module paths)."""
    products = sorted({p for files in facts.copies.values() for p in files if want.is_product(p)})
    parts = [f"written by the build with version {want.version or '(not known)'}: {', '.join(want.version_files)}"
             ] if want.version_files else []
    if products:
        parts.append(f"compiled modules its configuration declares: {', '.join(products[:20])}")
    return "".join(f"; {part}" for part in parts)


def installed_version(facts: Facts) -> str | None:
    """The version in the distribution's metadata, read from outside."""
    dist_info = facts.probe.get("dist_info") or ""
    for name in ("METADATA", "PKG-INFO"):
        found = facts.files.get(f"{dist_info}/{name}")
        match = re.search(r"^Version:\s*(\S+)", found.text or "", re.M) if found else None
        if match:
            return match.group(1)
    return facts.probe.get("version")


def check_version(facts: Facts, want: Expected) -> CheckResult:
    if want.version is None:
        why = want.versioning or "the project is not versioned from git"
        return CheckResult("verify_version", None, None, f"no version to compare ({why})")
    found = installed_version(facts)
    return CheckResult("verify_version", found, want.version,
                       f"{want.profile.distribution} {found or '(not installed)'}, the commit's is {want.version}")


def check_smoke(facts: Facts, want: Expected) -> CheckResult:
    """The profile's deep imports import and its commands exit 0 in time; an ABI error is `abi_mismatch`."""
    if want.smoke.empty and not want.smoke.skipped:
        return CheckResult("verify_smoke", [], [], "none asked by the profile")
    verdict = read_results(want.smoke, facts.probe.get("smoke"))
    if facts.probe.get("smoke_error"):
        verdict.failures.append(f"the probe's smoke phase failed:\n{tail(facts.probe['smoke_error'])}")
    return CheckResult(verdict.category, verdict.failures, [], verdict.describe())


def evaluate(facts: Facts, want: Expected) -> Checks:
    return Checks(check_label(facts, want), check_proof_file(facts, want), check_source(facts, want),
                  check_import(facts, want), check_editable_install(facts, want), check_version(facts, want),
                  check_smoke(facts, want))


def summary(results: Checks) -> str:
    return "\n".join(r.line() for r in results)
