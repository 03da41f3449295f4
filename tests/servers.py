"""Real Redis servers for tests: a 3-node Redis Cluster formed without redis-cli."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
SLOTS = 16384
_PORTS = range(20000, 30000)
_BUS_PORT_OFFSET = 10000
_START_ATTEMPTS = 5
_PORT_PICKS = 100
# Redis 6.2 has no ADDSLOTSRANGE, so slots go over in chunks of reasonable argument lists.
_SLOTS_PER_COMMAND = 1000
_POLL_INTERVAL = 0.02
_LOG_TAIL_LINES = 10


class ClusterStartError(Exception):
    """The cluster did not start or form; the message ends with the nodes' log tails."""


@dataclass
class ClusterProcesses:
    """The redis-server processes of one test cluster."""

    ports: list[int]
    host: str
    processes: list[subprocess.Popen[bytes]] = field(repr=False)
    node_dirs: list[Path] = field(repr=False)

    @property
    def url(self) -> str:
        """A startup node for redis.cluster.RedisCluster.from_url."""
        return f"redis://{self.host}:{self.ports[0]}"

    def stop(self) -> None:
        """Terminate every node and wait for it; calling it again does nothing."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            _wait_or_kill(process)

    def logs(self) -> str:
        """The last lines of every node's log, for a failure message."""
        return "\n".join(_log_tail(node_dir) for node_dir in self.node_dirs)


def start_cluster(
    binary: Path, base_dir: Path, nodes: int = 3, timeout: float = 20.0
) -> ClusterProcesses:
    """Start `nodes` cluster-enabled servers on 127.0.0.1 and join them into one cluster."""
    deadline = time.monotonic() + timeout
    cluster = ClusterProcesses(ports=[], host=HOST, processes=[], node_dirs=[])
    with contextlib.ExitStack() as undo:
        undo.callback(cluster.stop)
        for index in range(nodes):
            node_dir = base_dir / f"node{index}"
            node_dir.mkdir(parents=True, exist_ok=True)
            cluster.node_dirs.append(node_dir)
            port, process = _start_node(binary, node_dir, set(cluster.ports), deadline)
            cluster.ports.append(port)
            cluster.processes.append(process)
        _form(cluster, deadline)
        undo.pop_all()
    return cluster


def _start_node(
    binary: Path, node_dir: Path, taken: set[int], deadline: float
) -> tuple[int, subprocess.Popen[bytes]]:
    # Another process may take a port between the check and the server's bind: try again.
    for _ in range(_START_ATTEMPTS):
        port = _free_port(taken)
        process = _spawn(binary, node_dir, port)
        with contextlib.ExitStack() as undo:
            undo.callback(_stop_process, process)
            if _wait_until_serving(process, port, deadline):
                undo.pop_all()
                return port, process
    raise ClusterStartError(
        f"no node started in {node_dir} after {_START_ATTEMPTS} attempts\n{_log_tail(node_dir)}"
    )


def _free_port(taken: set[int]) -> int:
    """A random port that is free, and whose cluster bus port (+10000) is free too."""
    for _ in range(_PORT_PICKS):
        port = random.choice(_PORTS)
        if port not in taken and _can_bind(port) and _can_bind(port + _BUS_PORT_OFFSET):
            return port
    raise ClusterStartError(f"no free port pair found in {_PORT_PICKS} random picks")


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _spawn(binary: Path, node_dir: Path, port: int) -> subprocess.Popen[bytes]:
    args = [
        str(binary),
        *("--port", str(port), "--bind", HOST),
        *("--cluster-enabled", "yes", "--cluster-node-timeout", "2000"),
        *("--cluster-config-file", str(node_dir / "nodes.conf")),
        *("--appendonly", "no", "--save", ""),
        *("--dir", str(node_dir), "--daemonize", "no"),
        *("--logfile", str(node_dir / "redis.log")),
    ]
    # Argument errors are printed before the log file is opened, so they go there too.
    with (node_dir / "redis.log").open("ab") as log:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=node_dir
        )


def _wait_until_serving(process: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
    """True once this process answers on port; False if it exited (a port clash, say)."""
    while process.poll() is None:
        # Checking the pid, not just a PONG, so a stranger that holds the port cannot pass.
        if _server_pid(port) == process.pid:
            return True
        if time.monotonic() >= deadline:
            raise ClusterStartError(f"node on port {port} did not answer before the deadline")
        time.sleep(_POLL_INTERVAL)
    return False


def _server_pid(port: int) -> int | None:
    with contextlib.closing(_client(port)) as client:
        try:
            return int(client.info("server")["process_id"])
        except (redis.ConnectionError, redis.TimeoutError):
            return None


def _form(cluster: ClusterProcesses, deadline: float) -> None:
    """Assign contiguous slot ranges, introduce every node to the first, wait for agreement."""
    count = len(cluster.ports)
    for index, port in enumerate(cluster.ports):
        slots = range(index * SLOTS // count, (index + 1) * SLOTS // count)
        with contextlib.closing(_client(port)) as client:
            # Distinct epochs up front, as redis-cli does, so no collision needs resolving.
            client.cluster("SET-CONFIG-EPOCH", index + 1)
            for start in range(0, len(slots), _SLOTS_PER_COMMAND):
                client.cluster("ADDSLOTS", *slots[start : start + _SLOTS_PER_COMMAND])
            if index > 0:
                client.cluster("MEET", cluster.host, cluster.ports[0])
    while not all(_agrees(port, count) for port in cluster.ports):
        if time.monotonic() >= deadline:
            raise ClusterStartError(f"cluster did not reach state ok\n{cluster.logs()}")
        time.sleep(_POLL_INTERVAL)


def _agrees(port: int, count: int) -> bool:
    """True once the node on port sees `count` nodes and every slot served."""
    with contextlib.closing(_client(port)) as client:
        try:
            info = client.cluster("INFO")
        except (redis.ConnectionError, redis.TimeoutError):
            return False
    return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == count)


def _client(port: int) -> redis.Redis:
    # No retries: callers poll on their own deadline.
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    _wait_or_kill(process)


def _wait_or_kill(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _log_tail(node_dir: Path) -> str:
    try:
        lines = (node_dir / "redis.log").read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"{node_dir}: no log"
    tail = lines[-_LOG_TAIL_LINES:]
    return "\n".join([f"{node_dir}/redis.log:", *(f"  | {line}" for line in tail)])
