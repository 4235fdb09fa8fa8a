"""TLS, mutual TLS between the tiers, and token auth at the gateway, with real certificates made
here (a CA, a server certificate for localhost, a client certificate)."""

from __future__ import annotations

import datetime
from pathlib import Path

import grpc
import pytest

from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.client import Client
from tests.support.stack import Stack

TEXTS = ["Angela Merkel met Emmanuel Macron in Berlin", "Florida has nice beaches"]


def _certs(root: Path) -> dict[str, str]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def write(name: str, cert: x509.Certificate, private: ec.EllipticCurvePrivateKey | None) -> None:
        (root / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if private is not None:
            (root / f"{name}.key").write_bytes(
                private.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )

    def issue(subject: str, private: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, ca_key, **ext):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer.subject if issuer else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        )
        if "san" in ext:
            builder = builder.add_extension(ext["san"], critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    ca_key = key()
    ca = issue("splitserve test CA", ca_key, None, ca_key)
    write("ca", ca, None)
    server_key = key()
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    write("server", issue("localhost", server_key, ca, ca_key, san=san), server_key)
    client_key = key()
    write("client", issue("splitserve gateway", client_key, ca, ca_key), client_key)
    (root / "tokens").write_text("s3cret-one\n\ns3cret-two\n")
    return {
        name: str(root / name) for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key", "tokens")
    }


def test_tls_mtls_and_tokens(tiny_bundles, tmp_path) -> None:
    c = _certs(tmp_path)
    bundle = tiny_bundles[("text-classification", "bert")].local_dir
    server_tls = {"tls_cert": c["server.pem"], "tls_key": c["server.key"], "tls_client_ca": c["ca.pem"]}
    gateway = {
        "tls_cert": c["server.pem"],
        "tls_key": c["server.key"],  # clients: TLS without client certificates
        "tier_tls_ca": c["ca.pem"],
        "tier_tls_cert": c["client.pem"],
        "tier_tls_key": c["client.key"],
        "tier_tls_server_name": "localhost",
        "auth_token_file": c["tokens"],
    }
    with Stack(bundle, pre=server_tls, model=server_tls, post=server_tls, gateway=gateway) as stack:
        with Client(stack.gateway) as plain:  # the gateway does not speak plaintext
            with pytest.raises(grpc.RpcError) as err:
                plain.info()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with Client(stack.gateway, tls_ca=c["ca.pem"], tls_server_name="localhost") as anonymous:
            with pytest.raises(grpc.RpcError) as err:
                anonymous.predict(TEXTS)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with Client(stack.gateway, token="wrong", tls_ca=c["ca.pem"], tls_server_name="localhost") as wrong:
            with pytest.raises(grpc.RpcError) as err:
                list(wrong.stream(TEXTS))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with Client(stack.gateway, token="s3cret-two", tls_ca=c["ca.pem"], tls_server_name="localhost") as client:
            results = client.predict(TEXTS)
            assert [r["id"] for r in results] == ["0", "1"] and "labels" in results[0]
            assert client.info()["task"] == "text-classification"
        # A tier under mutual TLS refuses a caller without a client certificate.
        credentials = grpc.ssl_channel_credentials(root_certificates=Path(c["ca.pem"]).read_bytes())
        options = [("grpc.ssl_target_name_override", "localhost")]
        with grpc.secure_channel(stack.addresses["preprocess"], credentials, options=options) as channel:
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.PreprocessStub(channel).Info(pb.TierInfoRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # Health stays open to probes (no token needed).
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        gw_credentials = grpc.ssl_channel_credentials(root_certificates=Path(c["ca.pem"]).read_bytes())
        with grpc.secure_channel(stack.gateway, gw_credentials, options=options) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
