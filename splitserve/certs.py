"""Certificates for mutual TLS between the gateway and the tiers, made on the spot: a CA, one server
certificate every tier serves (for the given hosts) and one client certificate the gateway
presents. `splitserve up --tier-mtls` makes them in a private temporary folder for its own run."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

FILES = ("ca.pem", "tier.pem", "tier.key", "gateway.pem", "gateway.key")


def make_mtls(folder: Path, hosts: list[str], days: int = 30) -> dict[str, Path]:
    """Write FILES into `folder` (created private); returns their paths by name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def issue(subject: str, key: ec.EllipticCurvePrivateKey, ca: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(ca[0] if ca else name(subject))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
        )
        if subject == "splitserve tier":
            sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
            for host in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    sans.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca[1] if ca else key, hashes.SHA256())

    paths = {f: folder / f for f in FILES}

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
        paths[f"{stem}.pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            paths[f"{stem}.key"].write_bytes(pem)
            paths[f"{stem}.key"].chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("splitserve CA", ca_key, None)
    write("ca", ca, None)
    for stem, subject in (("tier", "splitserve tier"), ("gateway", "splitserve gateway")):
        key = ec.generate_private_key(ec.SECP256R1())
        write(stem, issue(subject, key, (ca.subject, ca_key)), key)
    return paths


def tier_flags(paths: dict[str, Path]) -> list[str]:
    """A tier's flags: serve TLS, require the gateway's client certificate."""
    return [
        "--tls-cert",
        str(paths["tier.pem"]),
        "--tls-key",
        str(paths["tier.key"]),
        "--tls-client-ca",
        str(paths["ca.pem"]),
    ]


def gateway_flags(paths: dict[str, Path]) -> list[str]:
    """The gateway's flags: call the tiers over TLS, presenting its client certificate."""
    return [
        "--tier-tls-ca",
        str(paths["ca.pem"]),
        "--tier-tls-cert",
        str(paths["gateway.pem"]),
        "--tier-tls-key",
        str(paths["gateway.key"]),
    ]
