"""Source: which commits to build and the tree each is built from.

Takes the dataset, the blacklist and the project's repository; hands on the commits to build
(`dataset.CommitSpec`), a cached bare mirror and, per commit, a build context made by `git archive`
(`mirror.Mirror`, `mirror.BuildContext`) with its submodules, what the commit's own build configuration
says (`commit.CommitSource`), its Dockerfile (`commit.Dockerfile`), and the known breakages patched in the
context (`context_fixes`).

    dataset        the dataset and the blacklist -> the commits to build, in order
    mirror         the cached mirror, git's answers about a commit, build contexts
    submodules     each gitlink of the commit archived at its recorded commit
    scm_version    the version setuptools-scm gives the commit, computed from the mirror
    build_config   versioning, written files and compiled modules, read from the commit
    context_fixes  dependency files patched in the context
    commit         one commit before its build: its configuration and version, Dockerfile, submodules,
                   patched files and what it changed (the frozen values the pipeline passes on)
"""
