"""Build configuration: what the commit's own build says it writes, how it is versioned and what it compiles.

Read per commit from its `pyproject.toml`, `setup.cfg` and `setup.py` (never from a profile, which is
written once for one era of a project): whether the version comes from git (setuptools-scm, hatch-vcs)
and with which options, the files the build writes with that version (`version_file`, `write_to`,
hatch-vcs `version-file`), and the compiled extension modules it declares (setuptools `ext_modules` and
`ext-modules`, `RustExtension`, setuptools-rust, maturin, Cython). `setup.py` is read as a syntax tree,
never run; what cannot be read statically is said, and nothing beyond what is declared is accepted.
"""
from __future__ import annotations

import ast
import configparser
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:                      # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ReadFile = Callable[[str], "str | None"]
# Call names whose first argument (or `name=`/`target=`) is the dotted name of a compiled module.
EXTENSION_CALLS = re.compile(r"(\w*Extension|Library)$")
# Backends that compute a version from git in a way the harness does not reproduce: named, not computed.
OTHER_SCM = (("tool", "pdm", "version", "source"), ("tool", "poetry-dynamic-versioning", "enable"),
             ("tool", "versioningit"), ("tool", "versioneer"), ("tool", "dunamai"))


@dataclass(frozen=True)
class Versioning:
    """How the commit's build gets its version: `tool` ("setuptools-scm", "hatch-vcs") when it is computed
    from git with setuptools-scm `options`, else "" with `why` (static, read from code, another tool)."""

    tool: str
    said_by: str                           # where the configuration says it ("python/pyproject.toml [tool...]")
    options: dict = field(default_factory=dict)      # setuptools-scm configuration data
    version_files: tuple[str, ...] = ()    # tree paths of the files the build writes with the version
    why: str = ""

    @property
    def from_git(self) -> bool:
        return bool(self.tool)

    def line(self) -> str:
        if not self.from_git:
            return f"not versioned from git: {self.why}"
        files = f", writes {', '.join(self.version_files)}" if self.version_files else ""
        return f"{self.tool} ({self.said_by}){files}"


@dataclass(frozen=True)
class Product:
    """A compiled module the build declares: its dotted name and the declaration that names it."""

    module: str
    declared_by: str

    def line(self) -> str:
        return f"{self.module} ({self.declared_by})"


@dataclass(frozen=True)
class BuildConfig:
    """What one commit's build configuration says (tree paths relative to the repository's root)."""

    project_dir: str
    versioning: Versioning
    products: tuple[Product, ...] = ()
    unread: tuple[str, ...] = ()          # declarations that could not be read statically (nothing accepted)

    def product_paths(self, import_name: str) -> frozenset[str]:
        """The declared modules inside the package, as paths relative to its folder without the suffix
        (`srt/rust_extensions/_server` for `sglang.srt.rust_extensions._server`)."""
        prefix = import_name + "."
        return frozenset(p.module[len(prefix):].replace(".", "/") for p in self.products
                         if p.module.startswith(prefix))

    def lines(self) -> list[str]:
        """What the log, the report and the attestation say of it."""
        lines = [f"version: {self.versioning.line()}"]
        lines += [f"compiled: {p.line()}" for p in self.products] or ["compiled: none declared"]
        lines += [f"not read: {u}" for u in self.unread]
        return lines


def read_build_config(read: ReadFile, project_dir: str, tree_paths: Callable[[], Iterable[str]] = tuple) -> BuildConfig:
    """The commit's build configuration in `project_dir` (what pip installs), read through `read`; the tree's
    paths (`tree_paths`, asked only when cythonize() needs them) resolve source patterns."""
    def at(name: str) -> str:
        return posixpath.join(project_dir, name) if project_dir else name
    pyproject, unread = _toml(read(at("pyproject.toml")), at("pyproject.toml"))
    setup_py, setup_cfg = read(at("setup.py")), read(at("setup.cfg"))
    tree = _parse(setup_py, at("setup.py"), unread)
    versioning = _versioning(pyproject, tree, setup_cfg, at, unread)
    products = _products(pyproject, tree, at, read, tree_paths, project_dir, unread)
    return BuildConfig(project_dir, versioning, tuple(products), tuple(unread))


def _toml(text: str | None, path: str) -> tuple[dict, list[str]]:
    if text is None:
        return {}, []
    try:
        return tomllib.loads(text), []
    except tomllib.TOMLDecodeError as e:
        return {}, [f"{path} is not valid TOML ({e}): its build configuration is unknown"]


def _parse(text: str | None, path: str, unread: list[str]) -> ast.Module | None:
    if text is None:
        return None
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError) as e:
        unread.append(f"{path} does not parse ({e}): its setup() arguments are unknown")
        return None


def _get(data: object, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)            # type: ignore[assignment]
    return data


def _versioning(pyproject: dict, setup_py: ast.Module | None, setup_cfg: str | None, at: Callable[[str], str],
                unread: list[str]) -> Versioning:
    where = at("pyproject.toml")
    scm = _get(pyproject, "tool", "setuptools_scm")
    if isinstance(scm, dict):
        return _setuptools_scm(scm, f"{where} [tool.setuptools_scm]", at)
    hatch = _get(pyproject, "tool", "hatch", "version")
    if isinstance(hatch, dict) and hatch.get("source") == "vcs":
        return _hatch_vcs(pyproject, hatch, where, at)
    requires = [_name(r) for r in _get(pyproject, "build-system", "requires") or [] if isinstance(r, str)]
    dynamic = "version" in (_get(pyproject, "project", "dynamic") or [])
    if dynamic and "setuptools-scm" in requires and _get(pyproject, "tool", "setuptools", "dynamic", "version") is None:
        return _setuptools_scm({}, f"{where}: setuptools-scm in build-system.requires, version dynamic", at)
    keyword = _setup_keyword(setup_py, "use_scm_version")
    if keyword is not None:
        return _from_setup_py(keyword, at, unread)
    for keys in OTHER_SCM:
        if _get(pyproject, *keys) not in (None, False):
            return Versioning("", where, why=f"{where} [{'.'.join(keys[:-1] if len(keys) > 2 else keys)}] versions it "
                                             "from git with a tool whose version the harness does not compute")
    return Versioning("", where, why=_static_why(pyproject, setup_py, setup_cfg, at))


def _name(requirement: str) -> str:
    try:
        return canonicalize_name(Requirement(requirement).name)
    except InvalidRequirement:
        return ""


def _setuptools_scm(options: dict, said_by: str, at: Callable[[str], str]) -> Versioning:
    """setuptools-scm's files: `version_file` beside pyproject.toml, `write_to` under the root."""
    files = []
    if isinstance(options.get("version_file"), str):
        files.append(posixpath.normpath(at(options["version_file"])))
    if isinstance(options.get("write_to"), str):
        root = at(str(options.get("root", ".")))
        files.append(posixpath.normpath(posixpath.join(root, options["write_to"])))
    return Versioning("setuptools-scm", said_by, dict(options), tuple(dict.fromkeys(_inside(files))))


def _hatch_vcs(pyproject: dict, hatch: dict, where: str, at: Callable[[str], str]) -> Versioning:
    """hatch-vcs: setuptools-scm with `raw-options`, `tag-pattern` and `fallback-version`; its build hook's
    `version-file` beside pyproject.toml."""
    options = dict(hatch.get("raw-options") or {})
    if isinstance(hatch.get("tag-pattern"), str):
        options["tag_regex"] = hatch["tag-pattern"]
    if isinstance(hatch.get("fallback-version"), str):
        options["fallback_version"] = hatch["fallback-version"]
    hook = _get(pyproject, "tool", "hatch", "build", "hooks", "vcs")
    written = hook.get("version-file") if isinstance(hook, dict) else None
    files = [posixpath.normpath(at(written))] if isinstance(written, str) else []
    if isinstance(options.get("write_to"), str):
        files.append(posixpath.normpath(at(posixpath.join(str(options.get("root", ".")), options["write_to"]))))
    return Versioning("hatch-vcs", f"{where} [tool.hatch.version] source = \"vcs\"", options,
                      tuple(dict.fromkeys(_inside(files))))


def _from_setup_py(keyword: ast.expr, at: Callable[[str], str], unread: list[str]) -> Versioning:
    where = f"{at('setup.py')}: setup(use_scm_version=...)"
    try:
        value = ast.literal_eval(keyword)
    except ValueError:
        unread.append(f"{at('setup.py')} line {keyword.lineno}: use_scm_version is not a literal; its options "
                      "(a version file, a scheme) are not known, setuptools-scm's defaults are assumed")
        value = {}
    if value is False or value is None:
        return Versioning("", where, why=f"{where} turns setuptools-scm off")
    return _setuptools_scm(value if isinstance(value, dict) else {}, where, at)


def _inside(paths: list[str]) -> list[str]:
    return [p for p in paths if not p.startswith("../") and p != ".."]


def _setup_keyword(tree: ast.Module | None, name: str) -> ast.expr | None:
    for call in _calls(tree):
        if _call_name(call) == "setup":
            for keyword in call.keywords:
                if keyword.arg == name:
                    return keyword.value
    return None


def _calls(tree: ast.Module | None) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)] if tree is not None else []


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _static_why(pyproject: dict, setup_py: ast.Module | None, setup_cfg: str | None,
                at: Callable[[str], str]) -> str:
    """Why the configuration does not version the project from git, in its own words."""
    version = _get(pyproject, "project", "version")
    if isinstance(version, str):
        return f"{at('pyproject.toml')} [project] version = {version!r}"
    attr = _get(pyproject, "tool", "setuptools", "dynamic", "version")
    if attr is not None:
        return f"{at('pyproject.toml')} [tool.setuptools.dynamic] version = {attr}"
    hatch = _get(pyproject, "tool", "hatch", "version")
    if isinstance(hatch, dict):
        return f"{at('pyproject.toml')} [tool.hatch.version] reads it from {hatch.get('path', 'its source')}"
    if _get(pyproject, "build-system", "build-backend") == "flit_core.buildapi":
        return f"{at('pyproject.toml')}: flit reads __version__ from the module"
    if setup_cfg:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(setup_cfg)
            if parser.has_option("metadata", "version"):
                return f"{at('setup.cfg')} [metadata] version = {parser.get('metadata', 'version')}"
        except configparser.Error:
            pass
    keyword = _setup_keyword(setup_py, "version")
    if keyword is not None:
        return f"{at('setup.py')}: setup(version={ast.unparse(keyword)[:80]})"
    if not pyproject and setup_py is None and setup_cfg is None:
        return f"no pyproject.toml, setup.py or setup.cfg in {at('') or 'the root'}"
    return "its configuration names no version source from git"


def _products(pyproject: dict, setup_py: ast.Module | None, at: Callable[[str], str], read: ReadFile,
              tree_paths: Callable[[], Iterable[str]], project_dir: str, unread: list[str]) -> list[Product]:
    where = at("pyproject.toml")
    products = [Product(m["name"], f"{where} [tool.setuptools] ext-modules")
                for m in _get(pyproject, "tool", "setuptools", "ext-modules") or [] if isinstance(m, dict)
                and isinstance(m.get("name"), str)]
    products += [Product(m["target"], f"{where} [tool.setuptools-rust] ext-modules")
                 for m in _get(pyproject, "tool", "setuptools-rust", "ext-modules") or [] if isinstance(m, dict)
                 and isinstance(m.get("target"), str)]
    products += _maturin(pyproject, at, read, unread)
    backend = str(_get(pyproject, "build-system", "build-backend") or "")
    if backend.startswith(("scikit_build_core", "mesonpy", "pymsbuild")):
        unread.append(f"{where}: {backend} installs what its CMake or meson files say; those are not read "
                      "statically, so no compiled file it installs is accepted")
    products += _setup_py_products(setup_py, at("setup.py"), tree_paths, project_dir, unread)
    return list({p.module: p for p in products}.values())


def _maturin(pyproject: dict, at: Callable[[str], str], read: ReadFile, unread: list[str]) -> list[Product]:
    maturin = _get(pyproject, "tool", "maturin")
    backend = _get(pyproject, "build-system", "build-backend")
    if not isinstance(maturin, dict) and backend != "maturin":
        return []
    maturin = maturin if isinstance(maturin, dict) else {}
    where = f"{at('pyproject.toml')} [tool.maturin]"
    if isinstance(maturin.get("module-name"), str):
        return [Product(maturin["module-name"], f"{where} module-name")]
    cargo, _ = _toml(read(at(str(maturin.get("manifest-path", "Cargo.toml")))), "Cargo.toml")
    name = _get(cargo, "lib", "name") or _get(cargo, "package", "name")
    if not isinstance(name, str):
        unread.append(f"{where}: no module-name and no Cargo.toml crate name: the compiled module is unknown")
        return []
    name = name.replace("-", "_")
    return [Product(f"{name}.{name}", f"{where}: the crate's lib name, inside its Python package"),
            Product(name, f"{where}: the crate's lib name")]


def _setup_py_products(tree: ast.Module | None, where: str, tree_paths: Callable[[], Iterable[str]], project_dir: str,
                       unread: list[str]) -> list[Product]:
    products = []
    for call in _calls(tree):
        name = _call_name(call)
        if EXTENSION_CALLS.search(name) and name != "build_ext":
            arg = next((k.value for k in call.keywords if k.arg in ("name", "target")), None) or \
                (call.args[0] if call.args else None)
            value = _literal(arg)
            if isinstance(value, str):
                products.append(Product(value, f"{where}: {name}({value!r})"))
            elif isinstance(value, dict):
                products += [Product(str(v), f"{where}: {name}({value!r})") for v in value.values()]
            elif arg is not None:
                unread.append(f"{where} line {call.lineno}: {name}({ast.unparse(arg)[:80]}, ...) names its module "
                              "with an expression; that module is not accepted")
        elif name == "cythonize":
            products += _cython(call, where, tree_paths, project_dir, unread)
    mentions = tree is not None and any(isinstance(n, ast.keyword) and n.arg == "ext_modules" for n in ast.walk(tree))
    if mentions and not products and not any(u.startswith(where) for u in unread):
        unread.append(f"{where}: setup(ext_modules=...) names no module this reading can see; none is accepted")
    return products


def _literal(node: ast.expr | None) -> object:
    try:
        return ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None


def _cython(call: ast.Call, where: str, tree_paths: Callable[[], Iterable[str]], project_dir: str,
            unread: list[str]) -> list[Product]:
    """cythonize() of literal source patterns: each matching .pyx/.py file of the tree is a module."""
    import fnmatch
    value = _literal(call.args[0] if call.args else None)
    patterns = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if patterns is None or not all(isinstance(p, str) for p in patterns):
        if not any(isinstance(a, ast.Call) for a in call.args):      # Extension(...) objects are read above
            unread.append(f"{where} line {call.lineno}: cythonize() of an expression; its modules are not accepted")
        return []
    prefix = project_dir.rstrip("/") + "/" if project_dir else ""
    found = []
    for path in tree_paths():
        rel = path[len(prefix):] if path.startswith(prefix) else None
        if rel and rel.endswith((".pyx", ".py")) and any(fnmatch.fnmatchcase(rel, p) for p in patterns):
            found.append(Product(rel.rsplit(".", 1)[0].replace("/", "."), f"{where}: cythonize({value!r})"))
    return found
