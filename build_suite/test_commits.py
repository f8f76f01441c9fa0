"""The build suite: one test per commit of the dataset; its image must hold exactly that commit."""
from helpers.pipeline import require_all


def test_commit(commit_image, harness, record_property):
    """The fixture built, tagged and pushed the image; here it must exist and pass every check."""
    image = commit_image.get()
    if harness.config.prepare_only:
        return                      # rendered and written to --out-dir; nothing was built
    results = harness.verify(image)
    for result in results:
        record_property(f"check.{result.category}", result.line())
    require_all(results)
