"""What `abgate dev` checks before it starts anything: ports and its stored secrets."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from dev_support import free_ports

from abgate.config import parse_encryption_keys
from abgate.dev import DevError, Ports, check_ports, load_or_create_secrets


@pytest.fixture
def ports() -> Ports:
    free = free_ports()
    return Ports(free.proxy, free.admin, free.mock, free.mock + 1, free.mock + 2)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def test_free_ports_pass(ports: Ports) -> None:
    check_ports(ports)


def test_a_port_in_use_is_named_with_its_role_and_flag(
    ports: Ports, listener: socket.socket
) -> None:
    taken = listener.getsockname()[1]
    moved = Ports(taken, ports.admin, ports.gateway, ports.partner_a, ports.partner_b)
    with pytest.raises(DevError, match=f"port {taken} \\(proxy\\) is already in use.*--proxy-port"):
        check_ports(moved)


def test_a_partner_port_in_use_points_at_the_mock_port_flag(
    ports: Ports, listener: socket.socket
) -> None:
    taken = listener.getsockname()[1]
    moved = Ports(ports.proxy, ports.admin, ports.gateway, ports.partner_a, taken)
    with pytest.raises(DevError, match=f"port {taken} \\(partner checkpoint B\\).*--mock-port"):
        check_ports(moved)


def test_the_same_port_twice_is_refused(ports: Ports) -> None:
    clash = Ports(ports.proxy, ports.proxy, ports.gateway, ports.partner_a, ports.partner_b)
    with pytest.raises(DevError, match=f"port {ports.proxy} is asked for twice"):
        check_ports(clash)


def test_a_mock_range_past_65535_is_refused(ports: Ports) -> None:
    high = Ports(ports.proxy, ports.admin, 65534, 65535, 65536)
    with pytest.raises(DevError, match="port 65536 \\(partner checkpoint B\\) is out of range"):
        check_ports(high)


def test_secrets_are_created_once_private_and_then_reused(tmp_path: Path) -> None:
    first = load_or_create_secrets(tmp_path)
    assert stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode) == 0o600
    assert load_or_create_secrets(tmp_path) == first
    assert first["ABGATE_ADMIN_TOKEN"].startswith("abg_dev_")
    assert len(parse_encryption_keys(first["ABGATE_ENCRYPTION_KEYS"])) == 1


def test_damaged_secrets_are_refused_not_replaced(tmp_path: Path) -> None:
    # A new key would make every stored partner key undecryptable: never regenerate.
    (tmp_path / "secrets.json").write_text('{"ABGATE_ADMIN_TOKEN": 7}')
    with pytest.raises(DevError, match=r"secrets\.json is damaged"):
        load_or_create_secrets(tmp_path)
    assert (tmp_path / "secrets.json").read_text() == '{"ABGATE_ADMIN_TOKEN": 7}'


def test_unparseable_secrets_are_refused(tmp_path: Path) -> None:
    (tmp_path / "secrets.json").write_text("{not json")
    with pytest.raises(DevError, match=r"delete .* to start over"):
        load_or_create_secrets(tmp_path)
