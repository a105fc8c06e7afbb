"""Hosts made of Linux network namespaces, for tests that need more than loopback.

:class:`Lan` makes one namespace per host plus a "switch" namespace holding a bridge; each host
is joined to the bridge by a veth pair (``eth0`` in the host, one port per host on the
switch) and has its own address in a private /24. Nothing is created in the root namespace,
so runs in parallel (names carry the pid) or leftovers of a killed run do not clash, and
deleting the namespaces removes every link with them. Cutting a host off takes its switch
port down: its packets are dropped silently, like a pulled cable on the far side.

Processes run on a host through ``ip netns exec`` (:meth:`Host.prefix`). The control API of
a node listens on loopback of its own namespace, so the test reaches it with sockets made
inside that namespace: :class:`NetnsSockets` is a trio socket factory that makes each new
socket in the namespace named by :func:`inside` (``setns`` applies to the calling thread
only, and a socket stays in the namespace it was made in).

Everything here needs root; :func:`unavailable` says why it cannot run, by trying.
"""

from __future__ import annotations

import contextvars
import ctypes
import ipaddress
import itertools
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

IP = shutil.which("ip") or ("/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else None)
NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_PREFIX = "mmt"  # namespace names: mmt<pid>x<n>-<host>
_STALE = re.compile(rf"^{_PREFIX}(\d+)x\d+-")
_serial = itertools.count(1)


class NetnsError(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if IP is None:
        raise NetnsError("no ip binary (iproute2)")
    result = subprocess.run(
        [IP, *args], capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL
    )
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {(result.stderr or result.stdout).strip()}")
    return result


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None; tries a bridge and a veth pair
    in a probe namespace, which it deletes again."""
    if os.geteuid() != 0:
        return f"not running as root (euid {os.geteuid()})"
    if IP is None:
        return "no ip binary (iproute2) on PATH or in /usr/sbin"
    probe = f"{_PREFIX}{os.getpid()}x0-probe"
    try:
        ip("netns", "add", probe)
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    try:
        ip("-n", probe, "link", "add", "br0", "type", "bridge")
        ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ip("-n", probe, "link", "set", "v0", "master", "br0")
        with _entered(probe):
            pass
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        ip("netns", "del", probe, check=False)
    return None


def remove_stale() -> None:
    """Delete namespaces left by test runs whose process is gone (a run killed -9)."""
    listed = ip("netns", "list", check=False).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _STALE.match(name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            ip("netns", "del", name, check=False)


@dataclass
class Host:
    label: str
    netns: str
    address: str
    port: str  # its interface on the switch

    def prefix(self) -> list[str]:
        """Put in front of a command to run it on this host."""
        assert IP is not None
        return [IP, "netns", "exec", self.netns]


class Lan:
    """Hosts on one bridge: ``Lan(["a", "b"])`` gives hosts 10.77.0.11 and 10.77.0.12.

    Use it as a context manager, or call :meth:`create` and (always) :meth:`delete`.
    """

    def __init__(self, labels: list[str], subnet: str = "10.77.0.0/24") -> None:
        net = ipaddress.ip_network(subnet)
        base = f"{_PREFIX}{os.getpid()}x{next(_serial)}"
        self.prefixlen = net.prefixlen
        self.switch = f"{base}-sw"
        self.hosts = {
            label: Host(label, f"{base}-{label}", str(net.network_address + 11 + n), f"p{n}")
            for n, label in enumerate(labels)
        }
        self._made: list[str] = []

    def __getitem__(self, label: str) -> Host:
        return self.hosts[label]

    def _netns(self, name: str) -> None:
        ip("netns", "add", name)
        self._made.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def create(self) -> None:
        remove_stale()
        self._netns(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts.values():
            self._netns(host.netns)
            ip(
                "-n", self.switch, "link", "add", host.port, "type", "veth",
                "peer", "name", "eth0", "netns", host.netns,
            )  # fmt: skip
            ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
            ip("-n", host.netns, "addr", "add", f"{host.address}/{self.prefixlen}", "dev", "eth0")
            ip("-n", host.netns, "link", "set", "eth0", "up")

    def delete(self) -> None:
        """Delete every namespace made (their links go with them). Kill what runs in them
        first: a namespace lives on, unnamed, while a process is inside."""
        for name in reversed(self._made):
            ip("netns", "del", name, check=False)
        self._made.clear()

    def __enter__(self) -> Lan:
        try:
            self.create()
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def cut(self, label: str) -> None:
        """Take the host's switch port down: nothing reaches it or leaves it."""
        ip("-n", self.switch, "link", "set", self.hosts[label].port, "down")

    def heal(self, label: str) -> None:
        ip("-n", self.switch, "link", "set", self.hosts[label].port, "up")


# ---- sockets inside a namespace, from this process ----

_libc = ctypes.CDLL(None, use_errno=True)
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("netns", default=None)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def _entered(netns: str) -> Iterator[None]:
    """Switch this thread into ``netns`` and back; keep the body short and await-free."""
    with open("/proc/thread-self/ns/net", "rb") as home:
        with open(os.path.join(NETNS_DIR, netns), "rb") as target:
            _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


@contextmanager
def inside(netns: str) -> Iterator[None]:
    """Sockets trio makes in this task (and tasks it starts) are made in ``netns``; needs
    :class:`NetnsSockets` installed with ``trio.socket.set_custom_socket_factory``."""
    token = _current.set(netns)
    try:
        yield
    finally:
        _current.reset(token)


class NetnsSockets(trio.abc.SocketFactory):
    def socket(
        self,
        family: socket.AddressFamily | int = socket.AF_INET,
        type: socket.SocketKind | int = socket.SOCK_STREAM,
        proto: int = 0,
    ) -> trio.socket.SocketType:
        netns = _current.get()
        if netns is None:
            return trio.socket.from_stdlib_socket(socket.socket(family, type, proto))
        with _entered(netns):
            sock = socket.socket(family, type, proto)
        return trio.socket.from_stdlib_socket(sock)
