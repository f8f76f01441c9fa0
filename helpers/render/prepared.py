"""Prepared: a commit's context fixed and its Dockerfile rendered, ready to build.

Takes the build context, the commit's Dockerfile as written and the rendering options; hands on `Prepared`:
the Dockerfile before and after, every fix and note (the log's header and `--prepare-only` show them).
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers.render import Rendered, RenderOptions, render
from helpers.source.context_fixes import AppliedFix, apply_context_fixes
from helpers.source.dataset import CommitSpec
from helpers.source.mirror import BuildContext

Record = Callable[[str, object], None]


@dataclass(frozen=True)
class Prepared:
    """A commit ready to build: its Dockerfile before and after, every change made, and the files of the
    context the fixes patched (the image holds those bytes)."""

    spec: CommitSpec
    origin: str
    original: str
    rendered: Rendered
    fixes: tuple[AppliedFix, ...]
    notes: tuple[str, ...]
    patched: tuple[tuple[str, bytes], ...] = ()

    def diff(self) -> str:
        return "".join(difflib.unified_diff(self.original.splitlines(True), self.rendered.text.splitlines(True),
                                            "original", "rendered"))

    def write_to(self, out_dir: Path, sha: str) -> Path:
        """--prepare-only: the rendered Dockerfile, the diff and the list of fixes, per commit."""
        folder = out_dir / sha
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "Dockerfile").write_text(self.rendered.text, encoding="utf-8")
        (folder / "Dockerfile.original").write_text(self.original, encoding="utf-8")
        (folder / "Dockerfile.diff").write_text(self.diff(), encoding="utf-8")
        lines = [f"dockerfile: {self.origin}", "fixes:", *[f"  - {f}" for f in self.fixes], "changes:",
                 *[f"  - {n}" for n in self.notes],
                 "build args:", *[f"  {k}={v}" for k, v in self.rendered.build_args.items()]]
        (folder / "fixes.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return folder


def prepare(ctx: BuildContext, spec: CommitSpec, original: str, origin: str, fixes: frozenset[str],
            options: Callable[[], RenderOptions], record: Record) -> Prepared:
    """Fix the context's dependency files, then render the Dockerfile into the context with the options made from
    the fixed context (its dependency files decide the late source); record every change."""
    patched, context_fixes = apply_context_fixes(ctx.context, set(fixes))
    rendered = render(original, options())
    ctx.dockerfile.write_text(rendered.text)
    applied = tuple(context_fixes) + rendered.fixes
    if applied:
        record("fixes", "; ".join(str(f) for f in applied))
    return Prepared(spec, origin, original, rendered, applied, tuple(ctx.notes) + rendered.notes,
                    tuple(sorted(patched.items())))
