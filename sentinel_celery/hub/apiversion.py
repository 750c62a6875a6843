"""The ``X-GitHub-Api-Version`` request header: which REST API versions the hub accepts.

GitHub serves the versions it supports and answers 400 for any other value;
a request without the header gets ``2022-11-28``. The hub reports the one
chosen in ``X-GitHub-Api-Version-Selected`` and hands it to the handlers
(``ctx.api_version``); of 2026-03-10's breaking changes, two touch endpoints
the hub implements: ``GET /rate_limit`` loses ``rate``, and a directory
listing shows a submodule as ``submodule`` rather than ``file``.
"""

from __future__ import annotations

from .errors import HubError

DEFAULT_VERSION = "2022-11-28"
V2026_03_10 = "2026-03-10"
SUPPORTED_VERSIONS = (V2026_03_10, DEFAULT_VERSION)  # most recent first


def selected_version(header: str | None) -> str:
    """The version a request asked for, or the default; 400 with GitHub's message for an unsupported one."""
    if header is None or not header.strip():
        return DEFAULT_VERSION
    version = header.strip()
    if version in SUPPORTED_VERSIONS:
        return version
    supported = ", ".join(
        f'"{v}"' + (" (most recent)" if i == 0 else "") for i, v in enumerate(SUPPORTED_VERSIONS)
    )
    raise HubError(
        400,
        f'The version you specified in the "X-GitHub-Api-Version" request header, "{version}", is not a '
        f"supported version. The following versions are currently supported: {supported}.",
        documentation_url="https://docs.github.com/rest/about-the-rest-api/api-versions",
    )
