"""The build suite: one test per commit of the dataset; its image must hold exactly that commit."""


def test_commit(commit_image):
    """The fixture built the image and read its facts (pushing it only if they all hold); here each
    fact is asserted by name. Each message starts with the category the status lists use."""
    checks = commit_image.get()
    if checks is None:
        return                      # --prepare-only: rendered and written to --out-dir; nothing built
    label, proof_file, source_tree, imported, editable_install, version, smoke, change = checks
    assert label.actual == label.expected, label.why()
    assert proof_file.actual == proof_file.expected, proof_file.why()
    assert source_tree.actual == source_tree.expected, source_tree.why()
    assert imported.actual == imported.expected, imported.why()
    assert editable_install.actual == editable_install.expected, editable_install.why()
    assert version.actual == version.expected, version.why()
    assert smoke.actual == smoke.expected, smoke.why()
    assert change.actual == change.expected, change.why()
