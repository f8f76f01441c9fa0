"""Verify: an image's facts, read from outside and by a probe inside, compared with the commit.

Takes the image and what the commit needs it to hold (`checks.Expected`: its tree, version, written files
and compiled modules, smoke checks); hands on `checks.Checks`, one named fact each, and where the commit's
change went (`changes.ChangeReport`).

    probe_code, probe_smoke, probe_paths, probe   the probe, sent into the image as one script
    smoke         which deep imports and commands run, and what their results mean
    image_facts   files read from outside the image, the probe's run inside it
    known         definitions and bytecode verdicts learnt from images that passed, kept on disk
    checks        each check: a pure comparison of facts with the commit
    changes       where each path the commit changed went (verified, built, not in the image)
    serve         --serve-check: the image's server answers
"""
