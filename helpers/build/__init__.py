"""Build: the rendered Dockerfile and its context become a local image, and the engine keeps room for the next.

Takes a `driver.BuildRequest` (the context, the rendered Dockerfile, the build args and labels); hands on a
`driver.BuildResult` (the image tagged with the commit, each step's time, what was rebuilt), and keeps the
engine's disk under the run's budget.

    driver   which client builds (buildx, or BuildKit built into the client), the argv, the run with a deadline
    disk     room on the engine's data root, the build cache bounded, what a run leaves behind
"""
