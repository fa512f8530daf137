"""Secrets out of every URL this plugin prints, tags or writes (a storage password, a tracking URI's token). Pure."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s]*)@")
_SECRET_QUERY = re.compile(r"(?i)(?P<key>[?&;](?:password|passwd|pwd|token|access_token|auth_token|secret|"
                           r"api_key|apikey|key)=)(?!\*\*\*)(?:[^&;#\s:]|:(?![\s]|$))*")  # (already hidden: left alone)


def redact(url: str) -> str:
    """A store URL safe to print, tag and write: the password (``user:pw@``), a bare token (``token@host``) and
    secret query parameters (``?password=``, ``?token=``, ...) replaced by ***."""

    def hide(match: re.Match) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:***@" if colon else f"{match['scheme']}***@"

    return _SECRET_QUERY.sub(r"\g<key>***", _USERINFO.sub(hide, str(url)))
