"""Probe: runs INSIDE the image (any Python 3.6+) and prints every fact verification needs as JSON.

Sent as `python3 -c <this file> <json args>` in one container run with the entrypoint
overridden; it must not import anything from the harness.
"""
import hashlib
import json
import os
import sys
import traceback

MARK = "HARNESS-FACTS:"


def blob_hash(path):
    """git's blob hash of a file (of the link text for a symlink)."""
    data = os.readlink(path).encode() if os.path.islink(path) else open(path, "rb").read()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def distribution_facts(name):
    facts = {}
    try:
        from importlib import metadata
        dist = metadata.distribution(name)
    except Exception as e:  # no importlib.metadata, or not installed
        facts["dist_error"] = "%s: %s" % (type(e).__name__, e)
        return facts
    facts["version"] = dist.version
    facts["dist_location"] = str(dist.locate_file(""))
    text = dist.read_text("direct_url.json")
    if text:
        facts["direct_url"] = json.loads(text)
    return facts


def editable_dir(direct_url):
    """The directory pip installed from (PEP 610 dir_info), None for wheels and archives."""
    if not direct_url or "dir_info" not in direct_url or not direct_url.get("url", "").startswith("file://"):
        return None
    from urllib.parse import unquote, urlparse
    return unquote(urlparse(direct_url["url"]).path)


def hash_tree(root):
    hashes = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            path = os.path.join(folder, name)
            hashes[os.path.relpath(path, root).replace(os.sep, "/")] = blob_hash(path)
    return hashes


def main(args):
    if not args.get("import_from_workdir"):
        # Import from a neutral directory: never from the probe's working directory.
        sys.path[:] = [p for p in sys.path if p not in ("", ".")]
    facts_cwd = os.getcwd()
    facts = {"python": sys.version.split()[0], "cwd": facts_cwd}
    try:
        with open(args["proof_file"]) as f:
            facts["proof"] = f.read()
    except Exception as e:
        facts["proof_error"] = "%s: %s" % (type(e).__name__, e)
    facts.update(distribution_facts(args["distribution"]))
    try:
        module = __import__(args["import_name"])
        module_file = getattr(module, "__file__", None)
        if module_file:
            facts["module_file"] = os.path.realpath(module_file)
        else:
            facts["import_error"] = "%s imported as a namespace package from %s, not from its source" % (
                args["import_name"], list(getattr(module, "__path__", [])))
    except BaseException:
        facts["import_error"] = traceback.format_exc()[-3000:]
    source = editable_dir(facts.get("direct_url"))
    if source:
        facts["source_dir"] = os.path.realpath(source)
        root = os.path.join(facts["source_dir"], args["package_rel"])
    elif facts.get("module_file"):
        root = os.path.dirname(facts["module_file"])
    else:
        root = None
    if root and os.path.isdir(root):
        facts["package_dir"] = root
        facts["hashes"] = hash_tree(root)
    return facts


if __name__ == "__main__":
    sys.stdout.write("\n" + MARK + json.dumps(main(json.loads(sys.argv[1]))) + "\n")
