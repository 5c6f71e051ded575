"""A real OpenSSH server on loopback for the ssh device's tests, and a second venv as its "board".

The server is `/usr/sbin/sshd -D` with a temporary config: a fresh host key and one authorized client key
(ssh-keygen), keys only, loopback only, sftp for scp, and TMPDIR set to a folder of the test's. The board is a
separate venv holding only numpy and onnxruntime (pinned by constraints.txt), no torch and no edgevit, as on a
board; the device is given its python explicitly (root's shell startup files here put pyenv first on PATH, so
the server's `SetEnv PATH` alone does not pick it). The client side is an ssh_config file (identity,
known_hosts) that the device is given, so nothing in ~/.ssh is read or written.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SSHD = Path("/usr/sbin/sshd")
BOARD_PACKAGES = ("numpy", "onnxruntime")


@dataclass
class Sshd:
    port: int
    process: subprocess.Popen
    client_config: Path
    board: Path

    def descendants(self) -> list[int]:
        """The server's pids and those of every session it forked (walked in /proc by parent pid)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def kill(self) -> None:
        """The device dies: the server and every session of it, at once (SIGKILL, no goodbye on the wire)."""
        for pid in self.descendants():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_board(path: Path) -> float:
    """python3.11 -m venv + pip install numpy onnxruntime (constraints.txt); the seconds it took."""
    start = time.perf_counter()
    python = shutil.which("python3.11") or sys.executable
    subprocess.run([python, "-m", "venv", str(path)], check=True)
    subprocess.run([str(path / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    "-c", str(REPO / "constraints.txt"), *BOARD_PACKAGES], check=True)  # fmt: skip
    return time.perf_counter() - start


def start_sshd(tmp: Path, board: Path) -> Sshd:
    """sshd on a free loopback port, keys made here; raises with the server's own words if it does not come up."""
    if not SSHD.exists():
        raise RuntimeError(f"{SSHD} is missing: install openssh-server (the ssh device is tested against a real one)")
    Path("/run/sshd").mkdir(exist_ok=True)  # the privilege-separation directory sshd insists on
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True)
    (tmp / "authorized_keys").write_text((tmp / "client.pub").read_text())
    (tmp / "remote-tmp").mkdir()  # the board's TMPDIR: what a killed run leaves stays under pytest's tmp
    port = free_port()
    (tmp / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host'}\nPidFile {tmp / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nLogLevel ERROR\n"
        "Subsystem sftp internal-sftp\n"
        f"SetEnv PATH={board / 'bin'}:/usr/local/bin:/usr/bin:/bin TMPDIR={tmp / 'remote-tmp'}\n"
    )
    host_key = (tmp / "host.pub").read_text().split()
    (tmp / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (tmp / "ssh_config").write_text(
        f"Host *\n  IdentityFile {tmp / 'client'}\n  IdentitiesOnly yes\n  UserKnownHostsFile {tmp / 'known_hosts'}\n"
        "  StrictHostKeyChecking yes\n  LogLevel ERROR\n"
    )
    log = open(tmp / "sshd.log", "wb")  # noqa: SIM115 (the server outlives this function)
    process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(tmp / "sshd_config")], stderr=log)
    for _ in range(100):
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(tmp / 'sshd.log').read_text().strip()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return Sshd(port, process, tmp / "ssh_config", board)
