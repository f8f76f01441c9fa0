"""One exception hierarchy: every failure of a commit carries the category the reports show.

Lower layers (git, docker, requests) are translated into these at one boundary each, with
`raise ... from e`, so a failure never loses its commit, its command's exit status or the
tail of its log.
"""
from __future__ import annotations

# Every category a commit can end in, in the order the reports list them.
CATEGORIES = (
    "dataset_invalid",
    "commit_not_found",
    "dockerfile_missing",
    "unpinnable_dockerfile",
    "context_failed",
    "submodule_unavailable",
    "build_failed",
    "build_timeout",
    "push_failed",
    "image_not_found",
    "verify_label",
    "verify_proof_file",
    "verify_editable_install",
    "verify_import",
    "verify_source_mismatch",
    "verify_version",
    "abi_mismatch",
    "verify_smoke",
    "change_not_in_image",
    "server_failed_to_start",
    "server_timeout",
    "server_request_failed",
    "disk_full",
    "infra_error",
)


class HarnessError(Exception):
    """A failure of one commit; `category` names it in JUnit and in commit-status/."""

    category = "infra_error"

    def __init__(self, message: str, *, log_tail: str = "", exit_status: int | None = None):
        super().__init__(message)
        self.message = message
        self.log_tail = log_tail
        self.exit_status = exit_status
        self.stage: str | None = None          # where it happened: build (from the context on), verify, publish
        self.commit: str | None = None
        self.image: str | None = None

    def located(self, stage: str, commit: str, image: str | None) -> HarnessError:
        """The error with where it happened, as far as it does not say already."""
        self.stage, self.commit, self.image = self.stage or stage, self.commit or commit, self.image or image
        return self

    def describe(self) -> str:
        """The text a person reads in the report: category, reason, where, then the log's tail."""
        text = f"[{self.category}] {self.message}"
        if self.exit_status is not None:
            text += f" (exit status {self.exit_status})"
        if self.stage:
            text += f"\n(at the {self.stage} stage of commit {self.commit}" + \
                (f", image {self.image})" if self.image else ")")
        if self.log_tail:
            text += "\n--- last lines of the log ---\n" + self.log_tail.rstrip()
        return text

    def __str__(self) -> str:
        return self.describe()


class ConfigError(Exception):
    """A bad option or profile: stops the session before any commit runs."""


class DatasetInvalid(HarnessError):
    category = "dataset_invalid"


class CommitNotFound(HarnessError):
    category = "commit_not_found"


class DockerfileMissing(HarnessError):
    category = "dockerfile_missing"


class UnpinnableDockerfile(HarnessError):
    category = "unpinnable_dockerfile"


class ContextFailed(HarnessError):
    category = "context_failed"


class SubmoduleUnavailable(HarnessError):
    """A submodule the commit records could not be fetched at its commit (and the build needs it)."""

    category = "submodule_unavailable"


class BuildFailed(HarnessError):
    category = "build_failed"


class BuildTimeout(HarnessError):
    category = "build_timeout"


class PushFailed(HarnessError):
    category = "push_failed"


class ImageNotFound(HarnessError):
    category = "image_not_found"


class DiskFull(HarnessError):
    """The engine's data-root filesystem has no room for the build (checked before it, or hit during it)."""

    category = "disk_full"


class ServerFailedToStart(HarnessError):
    """--serve-check: the server's process exited (or could not start) before it answered its health path."""

    category = "server_failed_to_start"


class ServerTimeout(HarnessError):
    """--serve-check: the server kept running but its health path never answered 200 in time."""

    category = "server_timeout"


class ServerRequestFailed(HarnessError):
    """--serve-check: the server was healthy, but the profile's one tiny request failed."""

    category = "server_request_failed"


class InfraError(HarnessError):
    category = "infra_error"
