"""``token-projector certs``: a CA and a serving certificate the API server's Go client will accept."""

import base64
import ipaddress
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from webhook.cli import main
from webhook.errors import ConfigError
from webhook.install.certs import CertRequest, ca_bundle, write_certs
from webhook.install.deployment import CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE

REPO = Path(__file__).parents[2]


def load(folder: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((folder / name).read_bytes())


def test_sans_are_the_service_names_in_every_form_plus_the_extra_names_and_ips(tmp_path: Path) -> None:
    write_certs(
        CertRequest(
            out_dir=tmp_path, service="hook", namespace="sec", dns_names=("localhost",), ips=("127.0.0.1", "::1")
        )
    )
    sans = load(tmp_path, CERT_FILE).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["hook", "hook.sec", "hook.sec.svc", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


def test_the_serving_certificate_is_signed_by_the_ca_and_is_for_server_auth_only(tmp_path: Path) -> None:
    write_certs(CertRequest(out_dir=tmp_path))
    ca, cert = load(tmp_path, CA_FILE), load(tmp_path, CERT_FILE)
    cert.verify_directly_issued_by(ca)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 365
    # tls.crt carries the chain, so clients that only know the CA can still build it.
    assert (tmp_path / CERT_FILE).read_bytes().count(b"BEGIN CERTIFICATE") == 2


def test_keys_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    write_certs(CertRequest(out_dir=tmp_path))
    for name in (KEY_FILE, CA_KEY_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / CERT_FILE).stat().st_mode) == 0o644


def test_running_again_reuses_the_ca_so_the_registered_ca_bundle_stays_valid(tmp_path: Path) -> None:
    write_certs(CertRequest(out_dir=tmp_path))
    bundle, serial = ca_bundle(tmp_path / CA_FILE), load(tmp_path, CERT_FILE).serial_number
    write_certs(CertRequest(out_dir=tmp_path))
    assert ca_bundle(tmp_path / CA_FILE) == bundle
    assert load(tmp_path, CERT_FILE).serial_number != serial
    load(tmp_path, CERT_FILE).verify_directly_issued_by(load(tmp_path, CA_FILE))


def test_the_ca_bundle_is_the_base64_of_the_ca_file(tmp_path: Path) -> None:
    write_certs(CertRequest(out_dir=tmp_path))
    assert base64.b64decode(ca_bundle(tmp_path / CA_FILE)) == (tmp_path / CA_FILE).read_bytes()


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (CertRequest(out_dir=Path("x"), ips=("localhost",)), "--ip"),
        (CertRequest(out_dir=Path("x"), validity_days=0), "--validity-days"),
    ],
)
def test_bad_arguments_are_refused_naming_the_flag(request_: CertRequest, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        write_certs(request_)


def test_the_command_prints_the_sans_and_the_ca_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "--out-dir", str(tmp_path), "--dns-name", "localhost", "--ip", "127.0.0.1"]) == 0
    out = capsys.readouterr().out
    assert "localhost, 127.0.0.1" in out
    assert ca_bundle(tmp_path / CA_FILE) in out


def test_if_missing_keeps_existing_certificates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "--out-dir", str(tmp_path)]) == 0
    before = (tmp_path / CERT_FILE).read_bytes()
    assert main(["certs", "--out-dir", str(tmp_path), "--if-missing"]) == 0
    assert (tmp_path / CERT_FILE).read_bytes() == before
    assert "kept it" in capsys.readouterr().out


@pytest.mark.parametrize("name", [CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE])
def test_generated_material_in_certs_is_never_committed(name: str) -> None:
    result = subprocess.run(["git", "check-ignore", "-q", f"certs/{name}"], cwd=REPO, check=False)
    assert result.returncode == 0, f"certs/{name} must be ignored by git"
