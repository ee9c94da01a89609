"""URLs that may carry secrets (REDIS_URL, basic auth for Prometheus and the Pushgateway,
webhook URLs): one place that hides them for logs, errors and artifacts, and one that takes
basic-auth credentials out of a URL so they travel as a header, never in text."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["redact_url", "split_credentials", "url_origin"]

_SECRET_QUERY_KEYS = {"password", "pass", "auth", "token", "key", "secret", "sentinel_password"}


def redact_url(url: str) -> str:
    """The URL with any password replaced by ****: `redis://:****@host:6379/0`,
    `https://alice:****@prom:9090`; secret-looking query values too."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        # a lone userinfo (redis://secret@host) is often a password too: hide it whole
        netloc = f"{user}:****@{hostinfo}" if has_password else f"****@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "****" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_origin(url: str) -> str:
    """Scheme and host only, for URLs whose path is the secret (Slack and other webhooks)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    host = parts.netloc.rpartition("@")[2]
    return (
        f"{parts.scheme}://{host}/…" if parts.path not in ("", "/") else f"{parts.scheme}://{host}"
    )


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """`http://u:p@host` -> (`http://host`, ("u", "p")); a URL without credentials is unchanged."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    plain = urlunsplit(parts._replace(netloc=host))
    return plain, (unquote(parts.username), unquote(parts.password or ""))
