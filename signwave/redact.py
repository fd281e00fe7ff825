"""Show URLs without their passwords."""

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """Return `url` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    # Host and port are kept as written: parsing the port raises on a bad one,
    # and a bad URL is exactly what error messages need to show.
    host_port = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:***@{host_port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
