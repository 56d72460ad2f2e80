"""Pure syntax checks for Kubernetes names, label keys and values, and image references.

Each check returns ``None`` when the value is fine, or a short sentence saying what is wrong.
"""

from __future__ import annotations

import re

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# The grammar of github.com/distribution/reference (without IPv6 hosts).
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"^(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")
_PLACEHOLDER = re.compile(r"<[^<>]*>")


def dns1123_label(value: str) -> str | None:
    """A DNS-1123 label: at most 63 lowercase alphanumerics or '-', alphanumeric at both ends."""
    if len(value) > 63:
        return f"must be at most 63 characters (it has {len(value)})"
    if not _DNS1123_LABEL.match(value):
        return (
            "must consist of lowercase letters, digits and '-', "
            "and start and end with a letter or digit"
        )
    return None


def dns1035_label(value: str) -> str | None:
    """A DNS-1035 label (a Service name): like DNS-1123 but starting with a letter."""
    if len(value) > 63:
        return f"must be at most 63 characters (it has {len(value)})"
    if not _DNS1035_LABEL.match(value):
        return (
            "must consist of lowercase letters, digits and '-', "
            "start with a letter and end with a letter or digit"
        )
    return None


def dns1123_subdomain(value: str) -> str | None:
    """A DNS-1123 subdomain (a Node or Secret name): at most 253 characters."""
    if len(value) > 253:
        return f"must be at most 253 characters (it has {len(value)})"
    if not _DNS1123_SUBDOMAIN.match(value):
        return (
            "must consist of lowercase letters, digits, '-' and '.', "
            "and start and end with a letter or digit"
        )
    return None


def label_key(value: str) -> str | None:
    """A label key: an optional DNS-1123 subdomain prefix and '/', then a name of ≤ 63 chars."""
    prefix, sep, name = value.rpartition("/")
    if sep:
        if not prefix:
            return "has an empty prefix before '/'"
        problem = dns1123_subdomain(prefix)
        if problem:
            return f"has a prefix that {problem}"
    if not name:
        return "has an empty name"
    if len(name) > 63:
        return f"has a name longer than 63 characters ({len(name)})"
    if not _QUALIFIED_NAME.match(name):
        return (
            "has a name that must consist of letters, digits, '-', '_' or '.', "
            "and start and end with a letter or digit"
        )
    return None


def label_value(value: str) -> str | None:
    """A label value: empty, or ≤ 63 letters/digits/'-_.' starting and ending alphanumeric."""
    if len(value) > 63:
        return f"must be at most 63 characters (it has {len(value)})"
    if not _LABEL_VALUE.match(value):
        return (
            "must be empty or consist of letters, digits, '-', '_' or '.', "
            "and start and end with a letter or digit"
        )
    return None


def is_placeholder(value: str) -> bool:
    """True for template placeholders such as ``<YOUR_IMAGE>`` copied from documentation."""
    return bool(_PLACEHOLDER.search(value))


def image_reference(value: str) -> str | None:
    """A container image reference (``registry/path/name:tag@digest``), per the OCI grammar."""
    if not value:
        return "is empty"
    if is_placeholder(value):
        return "is a documentation placeholder, not an image"
    match = _REFERENCE.match(value)
    if not match:
        return (
            "is not a valid image reference "
            "(expected [registry[:port]/]path/name[:tag][@algorithm:hex], lowercase path)"
        )
    if len(match.group("name")) > 255:
        return "has a repository name longer than 255 characters"
    return None
