"""Credentials kept out of what the service stores, shows and logs: URLs without user, password and query."""

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

REDACTED = "[redacted]"

# A URL in free text: a scheme, "://", then anything up to a space, a quote or a bracket.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
# urllib3 names the request target without scheme or host: "Max retries exceeded with url: /path?key=...".
_TARGET = re.compile(r"(\bwith url: )(/[^\s'\"<>()]*)")
# An Authorization header's value as clients print it.
_AUTHORIZATION = re.compile(r"\b(Bearer|Token|Basic)\s+[A-Za-z0-9._~+/=-]{8,}")


def url_without_credentials(url: str) -> str:
    """Return the URL without user, password, query or fragment (where endpoints take keys and tokens)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return REDACTED
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def url_origin(url: str) -> str:
    """Return only the URL's scheme, host and port: what a log line may say about a URL a user chose."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return REDACTED
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}" + ("/…" if parts.path not in ("", "/") else "")


def credentials_stripped(text: str, secrets: Iterable[str] = ()) -> str:
    """Return `text` with the credentials it may hold taken out.

    URLs lose their user, password, query and fragment; a request target's query goes too;
    Authorization values and each of `secrets` (keys read from the environment) become
    "[redacted]".
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _URL.sub(lambda match: url_without_credentials(match.group(0)), text)
    text = _TARGET.sub(lambda match: match.group(1) + match.group(2).split("?", 1)[0].split("#", 1)[0], text)
    return _AUTHORIZATION.sub(lambda match: f"{match.group(1)} {REDACTED}", text)
