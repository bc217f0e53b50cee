"""One abstraction for every local process the project runs itself (the Kafka broker, the Spark Connect server):
where it keeps its state, how it starts, when it is ready, how it stops and what its status is.

A service keeps everything under `$RECO_DATA_DIR/<name>`: its pid file, its logs (`logs/`) and its data. It runs
in a session of its own, so Ctrl+C on `make run` leaves it running for the next start; `down()` stops it.
"""

import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service could not be installed, started, reached or stopped."""


@dataclass(frozen=True)
class ServiceStatus:
    running: bool
    pid: int | None
    address: str
    home: Path
    detail: str


def free_port(span: int = 1) -> int:
    """A port p of 127.0.0.1 with p … p + span - 1 free (a broker's controller listens on the next port), taken
    below the kernel's ephemeral range: a port from that range can be taken by an outgoing connection's local end
    between this check and the service's bind (it happened to a broker's controller port in CI)."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    for _ in range(1000):
        port = random.randrange(10000, max(10001, ephemeral_low - span))
        if all(_bindable(candidate) for candidate in range(port, port + span)):
            return port
    raise ServiceError(f"no {span} free consecutive ports below {ephemeral_low} on 127.0.0.1")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def children(pid: int) -> list[int]:
    """The live child processes of `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(") ", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue
        if int(ppid) == pid and state != "Z":
            found.append(int(stat.parent.name))
    return found


def command_line(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None


class LocalService:
    """A JVM (or any) process on 127.0.0.1 that the project starts, waits for, inspects and stops.

    A subclass names itself (`title`, the state folder `name`, the `marker` its command line carries, the
    environment variable that moves its port), and says how to `prepare` its files, the `command` that runs it,
    and whether it is `ready`."""

    title = "the service"
    name = "service"
    marker = ""
    port_variable = ""
    error = ServiceError
    ready_timeout_s = 60.0
    stop_timeout_s = 30.0

    def __init__(self, data_dir: str | Path, port: int):
        self.home = Path(data_dir).expanduser().resolve() / self.name
        self.host = "127.0.0.1"
        self.port = port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ports(self) -> list[int]:
        """Every port the service listens on: each must be free before it starts."""
        return [self.port]

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    @property
    def out_file(self) -> Path:
        """The process's stdout and stderr."""
        return self.home / "logs" / "server.out"

    @property
    def log_files(self) -> list[Path]:
        return [self.out_file]

    @property
    def workdir(self) -> Path:
        """The process's working directory."""
        return self.home

    # What a subclass says.

    def prepare(self, log) -> None:
        """Install and configure what the process needs (once; called before each start)."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def not_ready(self, timeout: float) -> str | None:
        """None when the service answers as its clients need, else why not."""
        return None if port_open(self.host, self.port) else "it does not listen yet"

    def check_running(self, pid: int) -> None:
        """Refuse a running process that cannot serve this configuration (say, on another port)."""

    # The same for every service.

    def read_pid(self) -> int | None:
        """The service's pid when it runs (a recycled pid of another program does not count)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        cmdline = command_line(pid)
        return pid if cmdline is None or self.marker in cmdline else None

    def up(self, timeout: float | None = None, log=print) -> ServiceStatus:
        """Start the service unless it runs already; return once it is ready."""
        timeout = self.ready_timeout_s if timeout is None else timeout
        pid = self.read_pid()
        if pid is not None:
            self.check_running(pid)
        else:
            for port in self.ports:
                if port_open(self.host, port):
                    raise self.error(f"port {port} on {self.host} is taken by another process; stop it or set "
                                     f"{self.port_variable} to another port")
            (self.home / "logs").mkdir(parents=True, exist_ok=True)
            self.prepare(log)
            with self.out_file.open("ab") as out:
                try:
                    process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, cwd=self.workdir, env=self.environment(),
                                               start_new_session=True)
                except OSError as error:
                    raise self.error(f"could not launch {self.title}: {error}") from None
            pid = process.pid
            self.pid_file.write_text(str(pid))
            log(f"started {self.title} (pid {pid}) on {self.address}; logs in {self.home / 'logs'}")
        deadline = time.monotonic() + timeout
        problem = "it did not start"
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise self.error(f"{self.title} exited during start-up; see {self.home / 'logs'}:\n{self.log_tail()}")
            problem = self.not_ready(timeout=max(2.0, deadline - time.monotonic()))
            if problem is None:
                return self.status()
            time.sleep(0.3)
        raise self.error(f"{self.title} (pid {pid}) was not ready within {timeout:.0f} s ({problem}); see "
                         f"{self.home / 'logs'}:\n{self.log_tail()}")

    def down(self, timeout: float | None = None, log=print) -> bool:
        """Stop the service (SIGTERM, then SIGKILL after `timeout`) and any child it leaves; False if it was not
        running."""
        timeout = self.stop_timeout_s if timeout is None else timeout
        pid = self.read_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        helpers = children(pid)  # e.g. Spark's Python worker daemon, in a process group of its own
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            log(f"{self.title} (pid {pid}) did not stop within {timeout:.0f} s; killing it")
            os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        deadline = time.monotonic() + 5.0  # helpers exit once their parent has gone
        while any(pid_alive(helper) for helper in helpers) and time.monotonic() < deadline:
            time.sleep(0.1)
        for helper in helpers:
            if pid_alive(helper):
                os.kill(helper, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        log(f"stopped {self.title} (pid {pid})")
        return True

    def status(self) -> ServiceStatus:
        pid = self.read_pid()
        if pid is None:
            return ServiceStatus(False, None, self.address, self.home, "not running")
        problem = self.not_ready(timeout=2.0)
        return ServiceStatus(problem is None, pid, self.address, self.home,
                             "running, ready" if problem is None else f"process alive but not ready ({problem})")

    def log_tail(self, lines: int = 20) -> str:
        tails = []
        for path in self.log_files:
            try:
                text = path.read_text(errors="replace").strip().splitlines()[-lines:]
            except OSError:
                continue
            if text:
                tails.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(tails) or "(no log output)"
