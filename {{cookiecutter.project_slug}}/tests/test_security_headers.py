"""Every page carries the security headers and a nonce-based Content-Security-Policy."""

import re

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def page(client):
    response = client.get("/")
    assert response.status_code == 200
    return response


def csp_directives(response):
    policy = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


def test_basic_security_headers(page):
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert page.headers["Cross-Origin-Opener-Policy"] == "same-origin"


def test_scripts_need_our_origin_or_the_nonce(page):
    script_src = csp_directives(page)["script-src"]
    assert "'unsafe-inline'" not in script_src
    assert "'unsafe-eval'" not in script_src
    assert "'self'" in script_src
    assert any(source.startswith("'nonce-") for source in script_src)


def test_every_inline_script_carries_this_responses_nonce(page):
    nonce = next(
        source[len("'nonce-") : -1]
        for source in csp_directives(page)["script-src"]
        if source.startswith("'nonce-")
    )
    html = page.content.decode()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts, "djust injects its client scripts into every LiveView page"
    for tag in scripts:
        assert f'nonce="{nonce}"' in tag, tag
    assert int(page.headers["Content-Length"]) == len(page.content)
