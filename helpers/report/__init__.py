"""Report: what each commit gave, as JUnit, status lists, attestations and the lines a person watches.

Takes each commit's outcome; hands on the JUnit report, `commit-status/success.txt` and
`commit-status/failed/<category>.txt`, an in-toto statement per verified image, and the summary.
`python -m helpers.report fold ...` merges the JUnit files of shards and re-runs.

    results    JUnit read and written, status lists, fold, the summary, attestations
    progress   a build log followed into one line of progress per step
"""
