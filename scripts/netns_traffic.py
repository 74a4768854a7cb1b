"""Real Linux TCP/UDP/ICMP traffic between two network namespaces, captured with tcpdump.

Fresh real captures for QA that no test data contains: a client namespace and a server namespace
joined by a veth pair (offloads off, so the capture holds wire-sized packets with real checksums),
one pcap per scenario (the scenario is the class label), and a ``manifest.csv`` for
``netdiffusion encode --manifest``. Needs root (namespaces, tcpdump), ``ip``, ``ss``, ``ethtool`` and
``tcpdump``.

usage: python scripts/netns_traffic.py OUT [--scenarios http,ipopts,...] [--list]

Scenarios (each a few hundred packets or less; sizes seeded):
  http      IPv4 request/response downloads, 1-60 kB, the server closing first
  http_v6   the same over IPv6
  ipopts    downloads whose client sets IPv4 options (record route; timestamps with addresses)
  ecn       downloads with ECN negotiated (net.ipv4.tcp_ecn=1 on both ends)
  nots      downloads without TCP timestamps, SACK or window scaling
  upload    client-to-server bulk data, then a 2-byte answer
  chat      many small messages both ways on one connection
  refused   connections to closed ports (SYN, RST-ACK)
  udp       request/response datagrams, and datagrams to closed ports (ICMP port unreachable)
  ping      ICMP and ICMPv6 echo requests and replies
  zero      a receiver that reads slowly through a tiny buffer (zero windows, window probes)
  fastopen  TCP Fast Open (net.ipv4.tcp_fastopen=3): a cookie, then requests sent on the SYN
  halfclose the client sends and closes its side first; the server answers after the FIN
  lossy     downloads through a token bucket that drops bursts (real loss, SACK recovery)
  v6        over IPv6: Fast Open with ECN, refused ports, UDP, ICMPv6 port unreachable
  urgent    urgent data (MSG_OOB) inside bulk sends: segments before the urgent byte carry URG and
            an urgent pointer past their own data (RFC 6093)
  scan      port scan probes as nmap sends them (SYN, FIN, NULL, Xmas, ACK, Maimon, SYN+FIN+PSH+URG)
            to an open and a closed port, from a raw socket; the kernels answer (RST-ACKs, a
            SYN-ACK the client's kernel resets, silence)

Prints a JSON summary (packets captured and dropped by the kernel per scenario); exit status 2
without root or tools.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

SERVER_V4, CLIENT_V4 = "10.77.0.2", "10.77.0.1"
SERVER_V6, CLIENT_V6 = "fd00:77::2", "fd00:77::1"
PORT, UDP_PORT = 9000, 40404
SCENARIOS = ("http", "http_v6", "ipopts", "ecn", "nots", "upload", "chat", "refused", "udp", "ping", "zero",
             "fastopen", "halfclose", "lossy", "v6", "scan", "urgent")
CONNECTIONS = {"http": 8, "http_v6": 4, "ipopts": 4, "ecn": 4, "nots": 4, "upload": 3, "chat": 2, "zero": 1,
               "fastopen": 4, "halfclose": 3, "lossy": 3, "v6": 4, "urgent": 2}
SYSCTLS = {"ecn": ["net.ipv4.tcp_ecn=1"], "fastopen": ["net.ipv4.tcp_fastopen=3"],
           "v6": ["net.ipv4.tcp_fastopen=3", "net.ipv4.tcp_ecn=1"],
           "nots": ["net.ipv4.tcp_timestamps=0", "net.ipv4.tcp_sack=0", "net.ipv4.tcp_window_scaling=0"]}


# -- the two ends (run inside the namespaces by this same file) -------------------------------------

def _recv_exactly(conn: socket.socket, n: int) -> int:
    got = 0
    while got < n:
        data = conn.recv(min(65536, n - got))
        if not data:
            break
        got += len(data)
    return got


# TCP flags of each scan probe (nmap -sS, -sF, -sN, -sX, -sA, -sM; OS detection's T3)
SCAN_PROBES = {"syn": 0x02, "fin": 0x01, "null": 0x00, "xmas": 0x29, "ack": 0x10, "maimon": 0x11, "t3": 0x2B}


def _serve(scenario: str) -> None:
    """Answer ``CONNECTIONS[scenario]`` connections (or datagrams for 20 s), then exit."""
    if scenario == "scan":  # an open port that accepts nothing: the scan's probes meet a listener
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((SERVER_V4, PORT))
        sock.listen(8)
        time.sleep(4)
        return
    if scenario == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((SERVER_V4, UDP_PORT))
        sock.settimeout(20)
        try:
            while True:
                data, addr = sock.recvfrom(2048)
                if data == b"stop":
                    return
                sock.sendto(data[::-1] + bytes(len(data) % 200), addr)
        except TimeoutError:
            return
    if scenario == "v6":  # UDP answers on IPv6 while the TCP connections run
        import threading

        def udp6() -> None:
            u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            u.bind((SERVER_V6, UDP_PORT))
            u.settimeout(20)
            try:
                while (data := u.recvfrom(2048))[0] != b"stop":
                    u.sendto(data[0][::-1], data[1])
            except TimeoutError:
                pass
        answering = threading.Thread(target=udp6, daemon=True)
        answering.start()
    v6 = scenario in ("http_v6", "v6")
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((SERVER_V6 if v6 else SERVER_V4, PORT))
    if scenario in ("fastopen", "v6"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 8)
    sock.listen(8)
    sock.settimeout(30)
    for _ in range(CONNECTIONS[scenario]):
        conn, _addr = sock.accept()
        with conn:
            if scenario == "chat":
                while data := conn.recv(4096):
                    conn.sendall(data[::-1] * 2)
            elif scenario == "halfclose":  # the client stops sending first; the server answers after
                while conn.recv(4096):
                    pass
                conn.sendall(os.urandom(20000))
            elif scenario == "urgent":  # the urgent bytes stay in line (SO_OOBINLINE)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
                time.sleep(0.3)  # the client's data queues behind a full window: its urgent byte too
                while conn.recv(65536):
                    pass
            elif scenario == "upload":
                size = struct.unpack("!Q", conn.recv(8))[0]
                _recv_exactly(conn, size)
                conn.sendall(b"OK")
            else:  # a download: the request says how many bytes; the server closes first
                size = struct.unpack("!Q", conn.recv(8))[0]
                conn.sendall(os.urandom(size))
                conn.shutdown(socket.SHUT_WR)
                conn.recv(16)
    if scenario == "v6":
        answering.join()  # until the client's "stop"


def _connect(family: int, address: str, options: bytes | None = None, rcvbuf: int | None = None) -> socket.socket:
    """Connect, retrying while the server starts."""
    for _ in range(100):
        sock = socket.socket(family, socket.SOCK_STREAM)
        if options:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, options)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            sock.connect((address, PORT))
            return sock
        except ConnectionRefusedError:
            sock.close()
            time.sleep(0.05)
    raise RuntimeError(f"no server at {address}:{PORT}")


def _download(sock: socket.socket, size: int, slow: bool = False) -> None:
    sock.sendall(struct.pack("!Q", size))
    got = 0
    while got < size:
        if slow:
            time.sleep(0.3 if got == 0 else 0.02)
        data = sock.recv(2048 if slow else 65536)
        if not data:
            break
        got += len(data)
    sock.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def _scan() -> None:
    """One probe per kind and port (open ``PORT``, closed ``PORT + 1``), each from its own source
    port, TCP header built here (checksum over the pseudo header), IP header by the kernel."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    src, dst = socket.inet_aton(CLIENT_V4), socket.inet_aton(SERVER_V4)
    sport = 41000
    for name, flags in SCAN_PROBES.items():
        for dport in (PORT, PORT + 1):
            sport += 1
            seq = random.Random(f"scan-{name}-{dport}").getrandbits(32)
            ack = seq ^ 0x5A5A5A5A if flags & 0x10 else 0
            header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 1024, 0, 0)
            pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(header))
            header = header[:16] + struct.pack("!H", _checksum(pseudo + header)) + header[18:]
            raw.sendto(header, (SERVER_V4, 0))
            time.sleep(0.05)
    time.sleep(0.5)


def _client(scenario: str) -> None:
    rng = random.Random(f"netns-{scenario}")
    v4 = socket.AF_INET
    if scenario == "scan":
        _scan()
        return
    if scenario == "lossy":
        for _ in range(CONNECTIONS[scenario]):
            _download(_connect(v4, SERVER_V4), rng.randint(200000, 500000))
    elif scenario in ("http", "ecn", "nots"):
        for _ in range(CONNECTIONS[scenario]):
            _download(_connect(v4, SERVER_V4), rng.randint(1, 60000))
    elif scenario == "http_v6":
        for _ in range(CONNECTIONS[scenario]):
            _download(_connect(socket.AF_INET6, SERVER_V6), rng.randint(1, 60000))
    elif scenario == "ipopts":
        record_route = bytes([7, 11, 4]) + bytes(8) + bytes([0])  # room for two addresses, EOL
        stamps = bytes([68, 12, 5, 1]) + bytes(8)  # one address + timestamp entry (flag 1)
        for i in range(CONNECTIONS[scenario]):
            _download(_connect(v4, SERVER_V4, options=record_route if i % 2 else stamps), rng.randint(1, 30000))
    elif scenario == "urgent":
        for _ in range(CONNECTIONS[scenario]):
            sock = _connect(v4, SERVER_V4)
            for _ in range(4):
                sock.sendall(os.urandom(rng.randint(30000, 80000)))
                sock.send(b"!", socket.MSG_OOB)
            sock.close()
    elif scenario == "upload":
        for _ in range(CONNECTIONS[scenario]):
            sock = _connect(v4, SERVER_V4)
            size = rng.randint(10000, 200000)
            sock.sendall(struct.pack("!Q", size) + os.urandom(size))
            sock.recv(2)
            sock.close()
    elif scenario == "chat":
        for _ in range(CONNECTIONS[scenario]):
            sock = _connect(v4, SERVER_V4)
            for _ in range(15):
                sock.sendall(os.urandom(rng.randint(1, 300)))
                sock.recv(4096)
                time.sleep(rng.random() * 0.01)
            sock.close()
    elif scenario == "fastopen":  # the first connection gets a cookie, the others send data on the SYN
        for _ in range(CONNECTIONS[scenario]):
            sock = socket.socket(v4, socket.SOCK_STREAM)
            sock.sendto(struct.pack("!Q", rng.randint(1, 20000)), socket.MSG_FASTOPEN, (SERVER_V4, PORT))
            while sock.recv(65536):
                pass
            sock.close()
            time.sleep(0.05)
    elif scenario == "v6":  # over IPv6: Fast Open (ECN on), refused ports, UDP and ICMPv6 unreachables
        for _ in range(CONNECTIONS[scenario]):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.sendto(struct.pack("!Q", rng.randint(1, 20000)), socket.MSG_FASTOPEN, (SERVER_V6, PORT))
            while sock.recv(65536):
                pass
            sock.close()
        for port in (9001, 9002):
            try:
                socket.create_connection((SERVER_V6, port), timeout=1).close()
            except OSError:
                pass
        udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp.settimeout(1)
        for _ in range(10):
            udp.sendto(os.urandom(rng.randint(20, 400)), (SERVER_V6, UDP_PORT))
            try:
                udp.recvfrom(2048)
            except (TimeoutError, ConnectionRefusedError):
                pass
        for port in (7, 9):
            udp.sendto(b"x" * 30, (SERVER_V6, port))
            time.sleep(0.05)
        udp.sendto(b"stop", (SERVER_V6, UDP_PORT))
    elif scenario == "halfclose":
        for _ in range(CONNECTIONS[scenario]):
            sock = _connect(v4, SERVER_V4)
            sock.sendall(os.urandom(rng.randint(1, 3000)))
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
            sock.close()
    elif scenario == "zero":
        _download(_connect(v4, SERVER_V4, rcvbuf=2048), 150000, slow=True)
    elif scenario == "refused":
        for port in (9001, 9002, 9003):
            try:
                socket.create_connection((SERVER_V4, port), timeout=1).close()
            except OSError:
                pass
    elif scenario == "udp":
        sock = socket.socket(v4, socket.SOCK_DGRAM)
        sock.settimeout(1)
        for _ in range(20):
            for _try in range(20):  # the server may not be bound yet: no answer, send again
                sock.sendto(os.urandom(rng.randint(20, 400)), (SERVER_V4, UDP_PORT))
                try:
                    sock.recvfrom(2048)
                    break
                except (TimeoutError, ConnectionRefusedError):
                    continue
        for port in (7, 9, 11):  # closed: ICMP port unreachable
            sock.sendto(b"x" * 30, (SERVER_V4, port))
            time.sleep(0.05)
        sock.sendto(b"stop", (SERVER_V4, UDP_PORT))
    elif scenario == "ping":
        raw4 = socket.socket(v4, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        raw6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        for sock in (raw4, raw6):
            sock.settimeout(1)
        for seq in range(6):
            body = os.urandom(56)
            echo = struct.pack("!BBHHH", 8, 0, 0, 77, seq) + body
            raw4.sendto(echo[:2] + struct.pack("!H", _checksum(echo)) + echo[4:], (SERVER_V4, 0))
            raw6.sendto(struct.pack("!BBHHH", 128, 0, 0, 78, seq) + body, (SERVER_V6, 0))  # kernel sums v6
            for sock in (raw4, raw6):
                try:
                    sock.recvfrom(2048)
                except TimeoutError:
                    pass


# -- namespaces and capture ---------------------------------------------------------------------------

def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")


class Link:
    """Two namespaces joined by a veth pair, offloads off; removed on exit."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.client, self.server = f"ndq-c-{tag}", f"ndq-s-{tag}"
        self.client_if, self.server_if = f"ndqc{tag}", f"ndqs{tag}"

    def __enter__(self) -> Link:
        _run("ip", "netns", "add", self.client)
        try:
            _run("ip", "netns", "add", self.server)
            _run("ip", "link", "add", self.client_if, "type", "veth", "peer", "name", self.server_if)
            for ns, dev, v4, v6 in ((self.client, self.client_if, CLIENT_V4, CLIENT_V6),
                                    (self.server, self.server_if, SERVER_V4, SERVER_V6)):
                _run("ip", "link", "set", dev, "netns", ns)
                _run("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
                _run("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
                _run("ip", "-n", ns, "link", "set", dev, "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
                subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "rx", "off", "sg", "off",
                                "tso", "off", "gso", "off", "gro", "off"], capture_output=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.client, self.server):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def sysctl(self, *settings: str) -> None:
        for ns in (self.client, self.server) if settings else ():
            _run("ip", "netns", "exec", ns, "sysctl", "-qw", *settings)


def _wait_listening(namespace: str, kind: str) -> None:
    """Wait until the server's socket is bound, so no client packet meets a closed port (a
    connection refused before the server listened would be a flow of its own)."""
    port = UDP_PORT if kind == "-lun" else PORT
    for _ in range(200):
        out = subprocess.run(["ip", "netns", "exec", namespace, "ss", "-H", kind], capture_output=True, text=True).stdout
        if f":{port} " in out:
            return
        time.sleep(0.025)
    raise RuntimeError(f"the server did not bind port {port} in 5 s")


def capture(scenario: str, out: Path) -> dict:
    """Run one scenario in fresh namespaces, captured on the client's interface into ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    with Link() as link:
        link.sysctl(*SYSCTLS.get(scenario, []))
        if scenario == "lossy":  # a token bucket with a 3-packet queue on the server's side drops bursts
            _run("ip", "netns", "exec", link.server, "tc", "qdisc", "replace", "dev", link.server_if, "root", "tbf",
                 "rate", "20mbit", "burst", "15kb", "limit", "4500")
        dump = subprocess.Popen(["ip", "netns", "exec", link.client, "tcpdump", "-i", link.client_if, "-s", "0",
                                 "-U", "--immediate-mode", "-B", "8192", "-w", str(out)], stderr=subprocess.PIPE, text=True)
        # tcpdump says "listening on ..." once it captures (warnings may come first); raw reads, so
        # nothing is left in a buffer that select() cannot see
        said, deadline, fd = b"", time.time() + 10, dump.stderr.fileno()
        while b"listening" not in said and time.time() < deadline:
            if not select.select([fd], [], [], max(deadline - time.time(), 0))[0]:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            said += chunk
        if b"listening" not in said:
            dump.kill()
            raise RuntimeError(f"tcpdump did not start: {said.decode(errors='replace').strip() or 'no answer in 10 s'}")
        time.sleep(0.5)
        server = None
        if scenario not in ("refused", "ping"):
            server = subprocess.Popen(["ip", "netns", "exec", link.server, *me, "--role", "server", scenario])
            _wait_listening(link.server, "-lun" if scenario == "udp" else "-ltn")
        try:
            subprocess.run(["ip", "netns", "exec", link.client, *me, "--role", "client", scenario], check=True,
                           timeout=120)
            if server:
                server.wait(timeout=30)
        finally:
            if server and server.poll() is None:
                server.kill()
            time.sleep(0.3)
            dump.send_signal(signal.SIGINT)
            _, err = dump.communicate(timeout=10)

    def count(word: str) -> int:
        for line in err.splitlines():
            if word in line:
                return int(line.split()[0])
        return -1
    return {"scenario": scenario, "pcap": str(out), "packets": count("captured"),
            "dropped_by_kernel": count("dropped by kernel")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="?")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--list", action="store_true", help="print the scenarios and exit")
    ap.add_argument("--role", choices=("server", "client"), help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    if args.role:  # inside a namespace
        scenario = rest[0] if rest else str(args.out)
        (_serve if args.role == "server" else _client)(scenario)
        return 0
    if args.out is None:
        ap.error("OUT is required")
    chosen = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        ap.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    missing = [t for t in ("ip", "ss", "tcpdump", "ethtool") if not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        print(f"netns_traffic: needs root and {', '.join(missing) or 'ip, tcpdump, ethtool'} "
              f"({'not root' if os.geteuid() != 0 else 'missing tools'})", file=sys.stderr)
        return 2
    results = [capture(s, args.out / s / f"{s}.pcap") for s in chosen]
    with open(args.out / "manifest.csv", "w") as f:
        f.write("path,label,macro,source\n")
        for r in results:
            f.write(f"{r['scenario']}/{r['scenario']}.pcap,{r['scenario']},netns,netns_traffic\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
