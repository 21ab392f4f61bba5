"""Network namespaces standing for hosts: each joined by a veth pair to this namespace, which holds the servers.

Each host is a namespace `pe-<pid>-<n>` with one end of a veth pair (`eth0` there, 10.213.X.2/30)
and the other end here (`pe<pid>h<n>`, 10.213.X.1). A process started in it with
`ip netns exec` reaches this namespace only through that pair: its servers (PostgreSQL, Redis)
at 10.213.X.1, where a forwarder of its own (benchmarks/forwarder.py) takes each connection to
the server's own address. A forwarder rather than a DNAT to 127.0.0.1: the throwaway PostgreSQL
accepts TCP from 127.0.0.1 only, which a DNAT would not change (the client's address stays
10.213.X.2), and the forwarder reaches servers anywhere, the user's included. When the kernel
has `netem`, each end of the pair delays what it sends by 1 ms.

Everything made is removed on leaving, whatever the way out (Ctrl-C and SIGTERM included);
namespaces left by a run that was killed outright (its pid gone) are removed at the next start.
"""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

FORWARDER = Path(__file__).resolve().parent / "forwarder.py"
NETWORK = "10.213"
DELAY_MS = 1
STALE = re.compile(r"^pe-(\d+)-\d+$")


class Unavailable(Exception):
    """Namespaces cannot be made here; the message says why."""


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def quiet_ip(*args: str) -> None:
    """Run `ip` where failing is fine (removing what may already have gone)."""
    subprocess.run(["ip", *args], capture_output=True, check=False)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def remove_stale() -> None:
    """Remove the namespaces a killed run left (named after a pid that has gone)."""
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        match = STALE.match(name)
        if match and not alive(int(match.group(1))):
            quiet_ip("netns", "delete", name)


def free_subnets(count: int) -> list[int]:
    """Return `count` third octets X such that nothing here uses 10.213.X.0/24 yet."""
    used = set(re.findall(rf"{re.escape(NETWORK)}\.(\d+)\.", ip("-4", "-o", "addr", "show")))
    start = os.getpid() % 250
    candidates = [(start + offset) % 250 + 1 for offset in range(250)]
    free = [octet for octet in candidates if str(octet) not in used]
    if len(free) < count:
        raise Unavailable(f"no free /24 left in {NETWORK}.0.0/16")
    return free[:count]


@dataclass
class Host:
    """One namespace, its veth pair, and the forwarder that takes its connections to the servers."""

    number: int
    octet: int
    log_dir: Path
    name: str = ""
    veth: str = ""
    delay_ms: float = 0
    delay_error: str = ""
    routes: dict[tuple[str, int], int] = field(default_factory=dict)
    forwarder: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.name = f"pe-{os.getpid()}-{self.number}"
        self.veth = f"pe{os.getpid()}h{self.number}"

    @property
    def address(self) -> str:
        """The address of the servers, as this host reaches them (this namespace's end of the pair)."""
        return f"{NETWORK}.{self.octet}.1"

    @property
    def own_address(self) -> str:
        return f"{NETWORK}.{self.octet}.2"

    @property
    def wrapper(self) -> tuple[str, ...]:
        """The command that runs a program on this host."""
        return ("ip", "netns", "exec", self.name)

    def reach(self, host: str, port: int) -> tuple[str, int]:
        """Return where a process on this host connects to reach the server at host:port."""
        return self.address, self.routes[(host, port)]

    def make(self, targets: list[tuple[str, int]]) -> None:
        ip("netns", "add", self.name)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.name)
        ip("addr", "add", f"{self.address}/30", "dev", self.veth)
        ip("link", "set", self.veth, "up")
        ip("-n", self.name, "addr", "add", f"{self.own_address}/30", "dev", "eth0")
        ip("-n", self.name, "link", "set", "eth0", "up")
        ip("-n", self.name, "link", "set", "lo", "up")
        self._delay()
        self._forward(targets)

    def _delay(self) -> None:
        """Delay each direction by DELAY_MS with netem, if the kernel has it (say why not otherwise)."""
        if shutil.which("tc") is None:
            self.delay_error = "no tc (iproute2) on this machine"
            return
        netem = ["root", "netem", "delay", f"{DELAY_MS}ms"]
        for command in (
            ["tc", "qdisc", "add", "dev", self.veth, *netem],
            ["ip", "netns", "exec", self.name, "tc", "qdisc", "add", "dev", "eth0", *netem],
        ):
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                self.delay_error = f"`{' '.join(command[-8:])}`: {done.stderr.strip()}"
                quiet_ip("netns", "exec", self.name, "tc", "qdisc", "del", "dev", "eth0", "root")
                subprocess.run(["tc", "qdisc", "del", "dev", self.veth, "root"], capture_output=True, check=False)
                return
        self.delay_ms = DELAY_MS

    def _forward(self, targets: list[tuple[str, int]]) -> None:
        for host, port in targets:
            taken = set(self.routes.values())
            self.routes[(host, port)] = port if port not in taken else max(taken) + 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        routes = [f"{self.address}:{listen}={host}:{port}" for (host, port), listen in self.routes.items()]
        with (self.log_dir / f"forwarder-{self.number}.log").open("ab") as log:
            self.forwarder = subprocess.Popen(
                [sys.executable, str(FORWARDER), *routes],
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        assert self.forwarder.stdout is not None
        if self.forwarder.stdout.readline().strip() != b"ready":
            raise Unavailable(f"the forwarder of host {self.number} did not start (see {log.name})")

    def forwarder_cpu_s(self) -> float:
        """Return the CPU time (user and system) the forwarder has used so far."""
        if self.forwarder is None:
            return 0.0
        fields = Path(f"/proc/{self.forwarder.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def remove(self) -> None:
        if self.forwarder is not None:
            self.forwarder.terminate()
            try:
                self.forwarder.wait(10)
            except subprocess.TimeoutExpired:
                self.forwarder.kill()
                self.forwarder.wait()
            self.forwarder = None
        quiet_ip("netns", "delete", self.name)
        quiet_ip("link", "delete", self.veth)


class Hosts:
    """`with Hosts(2, targets, log_dir) as hosts:` makes the namespaces, and removes them on leaving."""

    def __init__(self, count: int, targets: list[tuple[str, int]], log_dir: Path) -> None:
        self.count, self.targets, self.log_dir = count, targets, log_dir
        self.hosts: list[Host] = []

    def __enter__(self) -> list[Host]:
        if os.geteuid() != 0:
            raise Unavailable("network namespaces need root (this run is not)")
        if shutil.which("ip") is None:
            raise Unavailable("no `ip` (iproute2) on this machine")
        try:
            remove_stale()
            for number, octet in enumerate(free_subnets(self.count), start=1):
                self.hosts.append(Host(number, octet, self.log_dir))
                self.hosts[-1].make(self.targets)
        except subprocess.CalledProcessError as error:
            self.remove()
            raise Unavailable(f"`{' '.join(error.cmd)}` failed: {error.stderr.strip()}") from error
        except BaseException:
            self.remove()
            raise
        return self.hosts

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.remove()

    def remove(self) -> None:
        for host in self.hosts:
            host.remove()
        self.hosts.clear()
