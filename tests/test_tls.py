"""TLS of the generated Nginx sites, judged by an independent scanner.

sslyze scans the site and the compose site, each served by Debian's nginx
exactly as generated, and checks them against Mozilla's "intermediate"
server-side TLS profile (the version sslyze embeds). Only the listen ports,
the upstream address and the certificate paths change: the certificates are
an ECDSA and an RSA leaf from a throwaway CA that sslyze is told to trust, so
its certificate checks run too. The TLS settings do not depend on any answer,
so the default variant stands for all Nginx variants.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stack import Nginx, certificate_authority, free_port

pytestmark = pytest.mark.xdist_group("default")

SSLYZE = shutil.which("sslyze") or str(Path(sys.executable).parent / "sslyze")


def mozilla_guidelines_version():
    """The version of Mozilla's guidelines the installed sslyze checks against, e.g. 5.7."""
    import sslyze

    profiles = sorted((Path(sslyze.__file__).parent / "mozilla_tls_profile").glob("*.json"))
    return json.loads(profiles[-1].read_text())["version"]


def serve_with_test_certificates(site_text, domain, issued):
    """The site with both leaves in place of certbot's files; nginx gives each client one it supports."""
    live = f"/etc/letsencrypt/live/{domain}"
    (rsa_chain, rsa_key), (ecdsa_chain, ecdsa_key) = issued["rsa"], issued["ecdsa"]
    pair = f"ssl_certificate {live}/fullchain.pem;\n    ssl_certificate_key {live}/privkey.pem;"
    assert pair in site_text
    both = (
        f"ssl_certificate {ecdsa_chain};\n    ssl_certificate_key {ecdsa_key};\n"
        f"    ssl_certificate {rsa_chain};\n    ssl_certificate_key {rsa_key};"
    )
    return site_text.replace(pair, both).replace(f"{live}/chain.pem", str(issued["ca"]))


def scan(tmp_path, sites, domain):
    """Start nginx with each site, run one sslyze over all of them; (exit code, output, error logs)."""
    issued = certificate_authority(tmp_path / "ca")
    servers = []
    try:
        for index, text in enumerate(sites):
            prefix = tmp_path / f"nginx{index}"
            prefix.mkdir()
            # compose.conf's upstream is the compose service name, unknown here.
            site = serve_with_test_certificates(text, domain, issued).replace(
                "server web:8000", "server 127.0.0.1:8000"
            )
            servers.append(Nginx(prefix, site, upstream_port=free_port()).start())
        result = subprocess.run(
            [SSLYZE, "--mozilla_config=intermediate", f"--certinfo_ca_file={issued['ca']}",
             *(f"localhost:{server.https_port}" for server in servers)],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        logs = [(server.prefix / "logs" / "error.log").read_text() for server in servers]
        return result.returncode, result.stdout + result.stderr, logs
    finally:
        for server in servers:
            server.stop()


def compliance(output):
    """sslyze's closing section: one verdict per target, with the reasons."""
    return output[output.index("COMPLIANCE AGAINST TLS CONFIGURATION") :]


def sites(project):
    folder = project.path / "deploy" / "nginx"
    return [(folder / f"{project.slug}.conf").read_text(), (folder / "compose.conf").read_text()]


def test_site_names_the_profile_version_the_scanner_checks(bake):
    """The comment says which guidelines the lines follow; a newer sslyze profile means: review them."""
    version = mozilla_guidelines_version()
    for text in sites(bake("default")):
        assert re.search(rf"intermediate.*\b{re.escape(str(version))}\b", text, re.S), (
            f"the site should say it follows Mozilla's intermediate profile, guidelines {version}"
        )


@pytest.mark.slow
def test_sites_comply_with_mozilla_intermediate(bake, tmp_path):
    project = bake("default")
    code, output, logs = scan(tmp_path, sites(project), project.domain)
    verdicts = compliance(output)
    assert code == 0, verdicts
    assert verdicts.count("OK - Compliant.") == 2, verdicts
    # Stapling is on but has nothing to staple: the test CA names no OCSP
    # responder (nor do Let's Encrypt's certificates). nginx says so and serves.
    for log in logs:
        assert '"ssl_stapling" ignored, no OCSP responder URL in the certificate' in log, log
        assert "[emerg]" not in log


@pytest.mark.slow
def test_scan_would_catch_a_weak_cipher_or_curve(bake, tmp_path):
    """Guard for the test above: one CBC suite and one extra curve make sslyze fail, naming them."""
    project = bake("default")
    site = sites(project)[0]
    weakened = re.sub(r"ssl_ciphers (\S+);", r"ssl_ciphers \1:ECDHE-ECDSA-AES128-SHA;", site)
    weakened = weakened.replace("secp384r1;", "secp384r1:secp521r1;")
    assert weakened != site
    code, output, _ = scan(tmp_path, [weakened], project.domain)
    verdicts = compliance(output)
    assert code != 0, verdicts
    assert "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA" in verdicts and "secp521r1" in verdicts, verdicts
