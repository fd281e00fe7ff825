"""Show URLs without their passwords."""

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """Return `url` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    # redis-py and libpq also take the password as a query parameter.
    query = "&".join(
        f"{name}=***" if sep and name.lower() in ("password", "passwd") else f"{name}{sep}{value}"
        for name, sep, value in (pair.partition("=") for pair in parts.query.split("&"))
    )
    if parts.password is None:
        if query == parts.query:
            return url
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    user = parts.username or ""
    # Host and port are kept as written: parsing the port raises on a bad one,
    # and a bad URL is exactly what error messages need to show.
    host_port = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:***@{host_port}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
