"""Read configuration from environment variables.

Production fails at start, naming the variable, when a required value is
missing: a typo in an env file must not become a silent default.
"""

import ipaddress
import os

from django.core.exceptions import ImproperlyConfigured


def env_str(name, default=""):
    """Return the variable stripped of surrounding spaces, or the default."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_required(name, hint):
    """Return the variable or stop the process with a message that names it."""
    value = env_str(name)
    if not value:
        raise ImproperlyConfigured(f"Set the {name} environment variable: {hint}")
    return value


def env_bool(name, default=False):
    """Read true/false, yes/no, on/off or 1/0."""
    value = env_str(name).lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use true or false")


def env_int(name, default):
    """Read a whole number."""
    value = env_str(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number") from None


def env_float(name, default):
    """Read a decimal number such as a sample rate."""
    value = env_str(name)
    try:
        return float(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None


def env_list(name, default=()):
    """Read a comma-separated list, dropping empty items."""
    value = env_str(name)
    if not value:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_networks(name, default=()):
    """Read a comma-separated list of addresses or networks (CIDR), e.g. 10.0.0.0/8,::1."""
    networks = []
    for item in env_list(name, default):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is no address or network") from None
    return networks
