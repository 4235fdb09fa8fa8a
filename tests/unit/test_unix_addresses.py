"""Unix-domain socket addresses (`unix:PATH`), taken wherever an address is: a server's --host, the
gateway's replica lists (one gRPC `unix:` target over several sockets), and refused clearly where a
TCP port is needed too. Issue 25 (hops25)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway_svc.pool import target_for
from gateway_svc.settings import GatewaySettings
from preprocess_svc.settings import PreprocessSettings
from splitserve.core.grpc_server import is_unix, listen_address


def test_replica_lists_of_sockets_become_one_unix_target() -> None:
    assert target_for(["unix:/run/a/pre-0.sock"]) == "unix:/run/a/pre-0.sock"
    assert (
        target_for(["unix:/run/a/pre-0.sock", "unix:/run/a/pre-1.sock"]) == "unix:/run/a/pre-0.sock,/run/a/pre-1.sock"
    )
    assert target_for(["127.0.0.1:5001", "127.0.0.1:5002"]) == "ipv4:127.0.0.1:5001,127.0.0.1:5002"
    with pytest.raises(ValueError, match="mix unix: sockets and TCP addresses"):
        target_for(["unix:/run/a/pre-0.sock", "127.0.0.1:5002"])


def test_a_server_listens_where_its_host_says() -> None:
    unix = PreprocessSettings(bundle_uri="b", host="unix:/run/a/pre.sock")
    assert is_unix(unix.host) and listen_address(unix, 1) == "unix:/run/a/pre.sock"
    tcp = PreprocessSettings(bundle_uri="b", host="127.0.0.1")
    assert not is_unix(tcp.host) and listen_address(tcp, 5001) == "127.0.0.1:5001"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PreprocessSettings(bundle_uri="b", host="unix:/s.sock", port=5001), "--port needs a TCP --host"),
        (lambda: PreprocessSettings(bundle_uri="b", host="unix:/s.sock", metrics_port=9100), "--metrics-port"),
        (lambda: PreprocessSettings(bundle_uri="b", host="unix:"), "unix: needs a socket path"),
        (
            lambda: GatewaySettings(host="unix:/g.sock", rest_port=0, model=["unix:/m.sock"], inline_stages="b"),
            "--rest-port needs a TCP --host",
        ),
    ],
)
def test_what_a_socket_cannot_do_is_refused(make, message) -> None:
    with pytest.raises(ValidationError, match=message):
        make()
