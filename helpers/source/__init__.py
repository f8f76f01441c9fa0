"""Source: which commits to build and the tree each is built from.

Takes the dataset, the blacklist and the project's repository; hands on the commits to build
(`dataset.CommitSpec`), a cached bare mirror and, per commit, a build context made by `git archive`
(`mirror.Mirror`, `mirror.BuildContext`) with its submodules, what the commit's own build configuration
says (`build_config.BuildConfig`), and the known breakages patched in the context (`context_fixes`).

    dataset        the dataset and the blacklist -> the commits to build, in order
    mirror         the cached mirror, git's answers about a commit, build contexts
    submodules     each gitlink of the commit archived at its recorded commit
    build_config   versioning, written files and compiled modules, read from the commit
    context_fixes  dependency files patched in the context
"""
