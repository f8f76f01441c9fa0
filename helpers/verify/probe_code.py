"""Probe part: which functions and classes a module's source defines (by qualified name, from its syntax
tree), and whether the loaded module still holds that code.

Stdlib only, any Python 3.6+: it runs inside the image as part of the probe (helpers/verify/image_facts.py sends
it ahead of helpers/verify/probe.py as one script), and on the host, where helpers/definitions.py runs
`source_definitions` over the commit's blobs once per blob so that the probe need not parse them.

A name the source binds only by `def` or `class` in a scope (the module, a class body; also inside
`if`/`try`/`with` blocks there) must hold that code when the module is loaded. A name the module also
binds another way (an import, an assignment, `global` in a function, an attribute assignment such as
`Cls.method = ...`, a later `from x import *`) may rightly hold something else and is not judged.
Members the source does not define (what `@dataclass`, `Enum`, `NamedTuple`, attrs, pydantic or a
metaclass generate) are not judged either: they were never the source's.
"""
import ast
import types
import warnings

BLOCK_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
MISSING = object()
# How far a decorated object is followed to find the function it wraps (each step one wrapper or closure).
WRAPPER_STEPS = 48


def scope_statements(body):
    """Every statement of a scope, also inside its blocks (if, try, with, for, while, match), not inside defs."""
    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, DEFS):
            continue
        for name in BLOCK_FIELDS:
            stack.extend(reversed([n for n in getattr(node, name, None) or [] if isinstance(n, ast.AST)]))


def target_names(target):
    """The names an assignment target binds: `x`, `a, b`, `*rest`, and `Cls.attr` as a dotted name."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for t in target.elts for n in target_names(t)]
    if isinstance(target, ast.Starred):
        return target_names(target.value)
    if isinstance(target, ast.Attribute):
        inner = target_names(target.value)
        return [inner[0] + "." + target.attr] if len(inner) == 1 else []
    return []


def statement_bindings(node):
    """Names one statement binds other than by def/class (its own blocks are visited separately)."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [a.asname or a.name.split(".")[0] for a in node.names]
    if isinstance(node, ast.Assign):
        return [n for t in node.targets for n in target_names(t)]
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        return target_names(node.target) if getattr(node, "value", True) is not None else []
    if isinstance(node, (ast.For, ast.AsyncFor)):
        return target_names(node.target)
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [n for item in node.items if item.optional_vars is not None for n in target_names(item.optional_vars)]
    if isinstance(node, ast.Delete):
        return [n for t in node.targets for n in target_names(t)]
    if isinstance(node, ast.ExceptHandler):
        return [node.name] if node.name else []
    return []


def all_statements(tree):
    """Every statement of the module, inside functions and classes too (expressions are not visited)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        for name in BLOCK_FIELDS:
            stack.extend(n for n in getattr(node, name, None) or [] if isinstance(n, ast.AST))


def rebound_anywhere(tree, source):
    """Qualified names bound from anywhere in the module: `global x` in a function, `Cls.attr = ...`,
    `setattr(Cls, "attr", ...)`, and walrus targets (taken as the module's). Expressions are walked only
    when the source has a walrus or a `setattr(` at all."""
    found = set()
    for node in all_statements(tree):
        if isinstance(node, ast.Global):
            found.update(node.names)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found.update(n for t in targets for n in target_names(t) if "." in n)
    if b":=" not in source and b"setattr(" not in source:
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr" and len(node.args) >= 2:
            owner, attr = target_names(node.args[0]), node.args[1]
            if len(owner) == 1 and isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                found.add(owner[0] + "." + attr.value)
        elif type(node).__name__ == "NamedExpr":
            found.update(target_names(getattr(node, "target", None)))
    return found


def scope_definitions(body, prefix, rebound, out):
    """The definitions of one scope (and of the classes it defines), appended to `out`."""
    defs, bound, star_lines = {}, set(), []  # type: dict, set, list
    for node in scope_statements(body):
        if isinstance(node, DEFS):
            defs.setdefault(node.name, []).append(node)
            continue
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            star_lines.append(node.lineno)
        bound.update(statement_bindings(node))
    for name, nodes in defs.items():
        qual = prefix + name
        later_star = any(line > min(n.lineno for n in nodes) for line in star_lines)
        if name in bound or qual in rebound or later_star:
            continue            # bound another way too: its value may rightly come from elsewhere
        for node in nodes:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            kind = "class" if isinstance(node, ast.ClassDef) else "def"
            out.append([qual, kind, first, node.lineno, 1 if node.decorator_list else 0])
            if kind == "class":
                scope_definitions(node.body, qual + ".", rebound, out)


def source_definitions(source):
    """[[qualified name, "def" or "class", first line (its first decorator's), def line, decorated], ...] of
    a module's source; None when this Python cannot parse it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # real sources carry invalid escapes and the like
            tree = ast.parse(source)
    except (SyntaxError, ValueError, SystemError, RecursionError, MemoryError):
        return None
    out = []  # type: list
    scope_definitions(tree.body, "", rebound_anywhere(tree, source if isinstance(source, bytes) else source.encode()),
                      out)
    return out


def resolve(module, qual):
    """The object at a qualified name, through the module's and each class's own namespace (nothing
    inherited, no attribute hooks run); MISSING when absent."""
    obj = module
    for part in qual.split("."):
        namespace = vars(module) if obj is module else vars(obj) if isinstance(obj, type) else None
        if namespace is None:
            return MISSING
        obj = namespace.get(part, MISSING)
        if obj is MISSING:
            return MISSING
    return obj


def inner_callables(obj):
    """What a wrapper holds, the likeliest first: `__wrapped__`, a method's or a partial's function, a
    property's accessors, a closure's functions, and the callables a decorator object keeps in its own
    dict (`functools.lru_cache`, `triton.jit`, pydantic's validators). Classes are not followed (a
    closure holding its class would lead to all its methods), and no attribute hook runs."""
    if isinstance(obj, type):
        return []
    if isinstance(obj, types.FunctionType):
        wrapped = [v for k, v in vars(obj).items() if k == "__wrapped__"]
        cells = [c.cell_contents for c in obj.__closure__ or () if cell_filled(c)]
        return wrapped + [c for c in cells if is_wrapper(c)]
    if isinstance(obj, (staticmethod, classmethod, types.MethodType)):
        return [obj.__func__]
    if isinstance(obj, property):
        return [f for f in (obj.fget, obj.fset, obj.fdel) if f is not None]
    try:
        own = object.__getattribute__(obj, "__dict__")
    except (AttributeError, TypeError):
        own = {}
    inner = [object.__getattribute__(obj, "func")] if type(obj).__name__ in ("partial", "partialmethod") else []
    return inner + [v for v in list(own.values())[:64] if is_wrapper(v)]


def is_wrapper(value):
    return not isinstance(value, type) and (callable(value) or isinstance(value, (staticmethod, classmethod,
                                                                                   property)))


def cell_filled(cell):
    try:
        return cell.cell_contents is not cell       # an empty cell raises instead
    except ValueError:
        return False


def judge(obj, origin, spans, decorated, real, trusted):
    """None when the object holds the source's own function at one of its definitions' lines (itself or
    through wrappers), or code the package, the standard library or an installed library generated in
    its place (`Enum` moves a `__new__` aside, a metaclass sets its own); else where its code comes from
    instead: start-up code, a string compiled at run time, a file outside those places."""
    code = getattr(obj, "__code__", None) if type(obj) is types.FunctionType else None
    if code is not None and real(code.co_filename) == origin and \
            any(first <= code.co_firstlineno <= last for first, last in spans):
        return None                         # the plain function the source defines: most names
    queue, seen, files, index = [obj], set(), [], 0  # type: list, set, list, int
    while index < len(queue) and index < WRAPPER_STEPS:
        current = queue[index]
        index += 1
        if id(current) in seen:
            continue
        seen.add(id(current))
        code = getattr(current, "__code__", None) if isinstance(current, types.FunctionType) else None
        if code is not None:
            filename = real(code.co_filename)
            if filename == origin and any(first <= code.co_firstlineno <= last for first, last in spans):
                untrusted = [f for f in files if not trusted(f)]
                return "wrapped by code from %s" % untrusted[0] if untrusted else None
            files.append(filename)
        queue.extend(inner_callables(current))
    if not files:
        return None if decorated else "not Python code (%s)" % type(obj).__name__
    return None if trusted(files[0]) else "code from %s" % files[0]


def check_definitions(module, origin, definitions, real, trusted):
    """The source's definitions the loaded module does not hold: each as "qualified name (what instead)".

    A name defined several times (conditional definitions, `@overload` stubs, dispatch registrations
    under one name) holds whichever of them ran last: any of them will do."""
    by_name = {}  # type: dict
    for qual, kind, first, last, decorated in definitions:
        by_name.setdefault(qual, []).append((kind, first, last, decorated))
    found, methods = [], {}  # type: list, dict
    for qual, nodes in by_name.items():
        owner = qual.rpartition(".")[0]
        obj = resolve(module, qual)
        counted = owner in methods and any(kind == "def" for kind, _, _, _ in nodes)
        if counted:
            methods[owner][0] += 1
        if obj is MISSING:
            continue            # never bound (a `TYPE_CHECKING` block), or taken away by a class decorator
        if isinstance(obj, type) and any(kind == "class" for kind, _, _, _ in nodes):
            methods[qual] = [0, 0]
            continue
        spans = [(first, last) for kind, first, last, _ in nodes if kind == "def"]
        if not spans:
            found.append("%s (not a class: %s)" % (qual, type(obj).__name__))
            continue
        if counted:
            methods[owner][1] += 1
        verdict = judge(obj, origin, spans, any(d for _, _, _, d in nodes), real, trusted)
        if verdict:
            found.append("%s (%s)" % (qual, verdict))
    found += ["%s (holds none of the %d methods its source defines)" % (q, n)
              for q, (n, held) in sorted(methods.items()) if n and not held]
    return found
