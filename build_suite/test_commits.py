"""The build suite: one test per commit of the dataset; its image must hold exactly that commit."""
from helpers.pipeline import require_all


def test_commit(commit_image, harness, record_property):
    """Built, tagged and pushed by the fixture; here every verification check is asserted."""
    results = harness.verify(commit_image)
    for result in results:
        record_property(f"check.{result.category}", result.line())
    require_all(results)
