"""Attacks on the Python sandbox, each run with the Python audit hook switched OFF (the kernel alone must
refuse them; raw syscalls through ctypes included), and each followed by checks on the HOST:

* a canary host process (and this test process) still alive: no signal got out;
* no datagram on a host UNIX path socket or abstract socket, no connection on a host TCP server;
* no file outside the scratch directory read (the secret's text is not in the output) or written;
* memory (the cgroup's peak) and scratch disk within the run's limits;
* no process of the sandbox's uids left on the host after the run.

Syscall numbers are x86_64 (the CI machine); a few probes also check the audit hook on top. Probes that
would harm the host if a layer failed (reboot, clock, hostname, mounts) use harmless arguments: the call
is still refused before its arguments matter.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

import atlas_router
from atlas_router.tools.sandbox import SandboxLimits, SandboxResult, run_python

KERNEL_ONLY = SandboxLimits(timeout_s=5, audit_hook=False)
WITH_HOOK = SandboxLimits(timeout_s=5)
PROJECT = Path(atlas_router.__file__).resolve().parents[2]
SECRET_TEXT = f"host-secret-{uuid.uuid4().hex}"
HOST_PROBE_FILE = "/tmp/atlas-sandbox-probe"

PRELUDE = r'''
import ctypes, errno, os, signal, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = dict(kill=62, tkill=200, tgkill=234, rt_sigqueueinfo=129, rt_tgsigqueueinfo=297, pidfd_open=434,
          pidfd_send_signal=424, pidfd_getfd=438, process_vm_readv=310, process_vm_writev=311, ptrace=101,
          setuid=105, setresuid=117, setgid=106, unshare=272, mount=165, chroot=161, memfd_create=319, fork=57,
          vfork=58, clone=56, execve=59, connect=42, sendto=44, sendmsg=46, bind=49, io_uring_setup=425,
          bpf=321, perf_event_open=298, keyctl=250, userfaultfd=323, open_by_handle_at=304, setns=308,
          setsid=112, setpgid=109, shmget=29, mq_open=240, ioctl=16, pivot_root=155, umount2=166,
          init_module=175, reboot=169, swapon=167, add_key=248, mknod=133, name_to_handle_at=303, kcmp=312,
          process_madvise=440, move_pages=279, settimeofday=164, sethostname=170, capset=126, seccomp=317)
ESCAPES = []
def sc(name, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(NR[name], *args)
    err = ctypes.get_errno()
    print(f"{name} -> {ret} errno {err}")
    return ret, err
def must_fail(name, *args):
    ret, err = sc(name, *args)
    if ret >= 0:
        ESCAPES.append(name)
def attempt(label, fn):
    try:
        fn()
    except BaseException as e:
        print(f"{label} refused: {type(e).__name__}: {e}")
    else:
        ESCAPES.append(label)
def done():
    print("ESCAPED " + ",".join(ESCAPES) if ESCAPES else "all refused", flush=True)
'''


@dataclass
class Host:
    canary: subprocess.Popen
    unix_path: str
    unix_sock: socket.socket
    abstract_name: bytes
    abstract_sock: socket.socket
    tcp_port: int
    tcp_sock: socket.socket
    secret: Path
    outside: Path


def _live_processes_of(uid: int) -> list[int]:
    """Host processes (not zombies) running under ``uid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
            found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    base = tmp_path_factory.mktemp("attack-host")
    canary = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    unix_path = str(base / "host.sock")
    unix_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    unix_sock.bind(unix_path)
    os.chmod(unix_path, 0o777)  # even a writable socket must stay unreachable
    unix_sock.setblocking(False)
    abstract_name = b"\0atlas-attack-" + uuid.uuid4().hex.encode()
    abstract_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract_sock.bind(abstract_name)
    abstract_sock.setblocking(False)
    tcp_sock = socket.socket()
    tcp_sock.bind(("127.0.0.1", 0))
    tcp_sock.listen(16)
    tcp_sock.setblocking(False)
    secret = base / "secret.txt"
    secret.write_text(SECRET_TEXT)
    os.chmod(secret, 0o644)  # world-readable: only the sandbox's own walls may keep it out
    outside = base / "written-by-sandbox"
    h = Host(canary, unix_path, unix_sock, abstract_name, abstract_sock, tcp_sock.getsockname()[1], tcp_sock,
             secret, outside)
    yield h
    canary.kill()
    canary.wait()
    for leftover in ("/dev/shm/atlas-fill", "/dev/shm/atlas-fill2", HOST_PROBE_FILE):  # only if a probe got out
        if os.path.exists(leftover):
            os.unlink(leftover)
    for s in (unix_sock, abstract_sock, tcp_sock):
        s.close()


def _assert_host_unaffected(h: Host, result: SandboxResult) -> None:
    assert h.canary.poll() is None, "the canary host process was killed"
    for sock in (h.unix_sock, h.abstract_sock):
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
    with pytest.raises(BlockingIOError):
        h.tcp_sock.accept()
    assert SECRET_TEXT not in result.stdout and SECRET_TEXT not in result.stderr
    assert not h.outside.exists() and not os.path.exists(HOST_PROBE_FILE)
    assert not {"atlas-fill", "atlas-fill2"} & set(os.listdir("/dev/shm"))
    if result.layers.get("uid", "").isdigit():  # the run's own uid: nothing of it may live on
        assert _live_processes_of(int(result.layers["uid"])) == []
    if result.memory_peak_mb is not None:
        assert result.memory_peak_mb <= 512 + 1


@dataclass
class Probe:
    name: str
    code: str
    limits: SandboxLimits = KERNEL_ONLY
    check: Callable[[SandboxResult], None] | None = None
    expect_refused_marker: bool = True  # the code ends with done(): nothing may have escaped


def _not_ok(r: SandboxResult) -> None:
    assert not r.ok


def _memory_held(limit_mb: int) -> Callable[[SandboxResult], None]:
    def check(r: SandboxResult) -> None:
        assert not r.ok and r.error_kind in ("memory", "exception", "crash"), r.error
        assert r.memory_peak_mb is not None and r.memory_peak_mb <= limit_mb + 1
        assert "survived" not in r.stdout
    return check


def _probes() -> list[Probe]:
    p = [
        # --- signals to host processes (canary / this process) --------------------------------------------
        Probe("os_kill_canary", "attempt('os.kill', lambda: os.kill(@CANARY@, 9))\ndone()"),
        Probe("os_kill_parent_test_process", "attempt('os.kill', lambda: os.kill(@TESTPID@, signal.SIGCONT))\n"
              "attempt('ppid', lambda: os.kill(os.getppid(), signal.SIGCONT))\ndone()"),
        Probe("raw_kill", "must_fail('kill', @CANARY@, 9)\ndone()"),
        Probe("raw_tkill", "must_fail('tkill', @CANARY@, 9)\ndone()"),
        Probe("raw_tgkill", "must_fail('tgkill', @CANARY@, @CANARY@, 9)\ndone()"),
        Probe("raw_rt_sigqueueinfo",
              "info = ctypes.create_string_buffer(128)\nstruct.pack_into('iii', info, 0, 9, 0, -1)\n"
              "must_fail('rt_sigqueueinfo', @CANARY@, 9, info)\ndone()"),
        Probe("raw_rt_tgsigqueueinfo",
              "info = ctypes.create_string_buffer(128)\nstruct.pack_into('iii', info, 0, 9, 0, -1)\n"
              "must_fail('rt_tgsigqueueinfo', @CANARY@, @CANARY@, 9, info)\ndone()"),
        Probe("pidfd_kill_of_the_parent_issue14",
              "attempt('pidfd', lambda: signal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGCONT))\n"
              "attempt('pidfd test', lambda: signal.pidfd_send_signal(os.pidfd_open(@TESTPID@), signal.SIGCONT))\n"
              "attempt('pidfd canary', lambda: signal.pidfd_send_signal(os.pidfd_open(@CANARY@), 9))\ndone()"),
        Probe("raw_pidfd_open_send_signal",
              "fd, _ = sc('pidfd_open', @CANARY@, 0)\nmust_fail('pidfd_open', @CANARY@, 0)\n"
              "must_fail('pidfd_send_signal', fd if fd >= 0 else 3, 9, None, 0)\ndone()"),
        Probe("pidfd_getfd_steal_descriptor", "must_fail('pidfd_getfd', 3, 0, 0)\n"
              "attempt('pidfd_open', lambda: os.pidfd_open(@TESTPID@))\ndone()"),
        Probe("sigio_owner_signal_to_canary",
              "import fcntl\na, b = socket.socketpair()\n"
              "attempt('setown', lambda: fcntl.fcntl(a, fcntl.F_SETOWN, @CANARY@))\n"
              "try:\n    fcntl.fcntl(a, 10, 9)  # F_SETSIG: SIGKILL instead of SIGIO\n"
              "    fcntl.fcntl(a, fcntl.F_SETFL, os.O_ASYNC)\n    b.send(b'x')\nexcept OSError as e:\n"
              "    print('refused', e)\nimport time\ntime.sleep(0.2)\ndone()"),
        Probe("kill_all_processes_minus_one", "must_fail('kill', -1, signal.SIGCONT)\ndone()"),
        Probe("kill_own_process_group", "must_fail('kill', 0, signal.SIGKILL)\n"
              "attempt('killpg', lambda: os.killpg(@TESTPGID@, signal.SIGCONT))\ndone()"),
        Probe("int80_32bit_abi_kill",
              "import mmap\ncode = bytes([0xb8, 37, 0, 0, 0, 0xbb]) + struct.pack('<I', @CANARY@) + "
              "bytes([0xb9, 9, 0, 0, 0, 0xcd, 0x80, 0xc3])\n"
              "buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\nbuf.write(code)\n"
              "addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))\n"
              "print('calling', flush=True)\nprint(ctypes.CFUNCTYPE(ctypes.c_int)(addr)())\ndone()",
              check=_not_ok, expect_refused_marker=False),
        # --- other processes' memory and tracing ------------------------------------------------------------
        Probe("ptrace_attach_canary", "must_fail('ptrace', 0x4206, @CANARY@, 0, 0)\ndone()"),  # SEIZE: no stop
        Probe("ptrace_traceme_then_parent", "must_fail('ptrace', 0, 0, 0, 0)\nmust_fail('ptrace', 0x4206, @TESTPID@, 0, 0)\n"
              "done()"),
        Probe("process_vm_readv_parent",
              "buf = ctypes.create_string_buffer(64)\nlocal = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 64)\n"
              "remote = (ctypes.c_void_p * 2)(0x400000, 64)\n"
              "must_fail('process_vm_readv', @TESTPID@, local, 1, remote, 1, 0)\ndone()"),
        Probe("process_vm_writev_canary",
              "buf = ctypes.create_string_buffer(64)\nlocal = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 64)\n"
              "remote = (ctypes.c_void_p * 2)(0x400000, 64)\n"
              "must_fail('process_vm_writev', @CANARY@, local, 1, remote, 1, 0)\ndone()"),
        Probe("proc_pid_mem_of_parent",
              "attempt('mem', lambda: open('/proc/@TESTPID@/mem', 'r+b'))\n"
              "attempt('environ', lambda: len(open('/proc/@TESTPID@/environ').read()))\n"
              "attempt('ppid mem', lambda: open(f'/proc/{os.getppid()}/mem', 'rb'))\ndone()"),
        # --- process creation and privilege games --------------------------------------------------------------
        Probe("fork_bomb", "def bomb():\n    for _ in range(100):\n        if os.fork() == 0:\n            os._exit(0)\n"
              "attempt('fork', bomb)\ndone()"),
        Probe("raw_clone_fork_vfork", "for args in (('clone', 17, 0, 0, 0, 0), ('fork',), ('vfork',)):\n"
              "    ret, err = sc(*args)\n    if ret == 0:\n        os._exit(0)\n    if ret > 0:\n"
              "        ESCAPES.append(args[0])\ndone()"),
        Probe("execve_shell", "must_fail('execve', b'/usr/bin/true', None, None)\n"
              "attempt('execv', lambda: os.execv('/usr/bin/true', ['true']))\ndone()"),
        Probe("libc_system", "rc = libc.system(b'touch @OUTSIDE@')\nprint('system', rc)\n"
              "ESCAPES.extend(['system'] if rc == 0 else [])\ndone()"),
        Probe("thread_bomb",
              "import threading, time\nn = 0\ntry:\n    for _ in range(2000):\n"
              "        threading.Thread(target=time.sleep, args=(2,), daemon=True).start(); n += 1\n"
              "except RuntimeError as e:\n    print('stopped at', n, e)\nif n >= 2000:\n    ESCAPES.append('threads')\n"
              "done()"),
        Probe("setsid_escape_group_then_outlive",
              "must_fail('setsid')\nmust_fail('setpgid', 0, 0)\nimport time\nprint('sleeping', flush=True)\n"
              "done()\ntime.sleep(60)", limits=SandboxLimits(timeout_s=1, audit_hook=False),
              check=lambda r: (r.error_kind == "timeout") or pytest.fail(r.error)),
        Probe("setuid_root_games",
              "print('uid', os.getuid(), os.geteuid())\nESCAPES.extend(['uid0'] if os.getuid() == 0 else [])\n"
              "attempt('setuid', lambda: os.setuid(0))\nattempt('setresuid', lambda: os.setresuid(0, 0, 0))\n"
              "attempt('setgid', lambda: os.setgid(0))\nmust_fail('setuid', 0)\nmust_fail('setresuid', 0, 0, 0)\n"
              "must_fail('capset', 0, 0)\ndone()"),
        Probe("new_user_namespace_for_capabilities",
              "must_fail('unshare', 0x10000000)\nmust_fail('unshare', 0x10000000 | 0x00020000)\n"
              "must_fail('setns', 0, 0)\ndone()"),
        Probe("mount_chroot_pivot",
              "os.mkdir('mnt')\nmust_fail('mount', b'tmpfs', b'mnt', b'tmpfs', 0, None)\n"
              "must_fail('mount', b'/usr', b'mnt', None, 4096, None)\nmust_fail('chroot', b'mnt')\n"
              "must_fail('pivot_root', b'/nonexistent-a', b'/nonexistent-b')\nmust_fail('umount2', b'mnt', 2)\ndone()"),
        Probe("kernel_surface_calls",
              "params = ctypes.create_string_buffer(256)\nmust_fail('io_uring_setup', 8, params)\n"
              "must_fail('bpf', 0, params, 64)\nmust_fail('perf_event_open', params, 0, -1, -1, 0)\n"
              "must_fail('userfaultfd', 0)\nmust_fail('keyctl', 0, -3, 0)\nmust_fail('add_key', b'user', b'x', b'y', 1, -3)\n"
              "must_fail('open_by_handle_at', 3, params, 0)\nmust_fail('init_module', params, 16, b'')\n"
              "must_fail('swapon', b'/dev/null', 0)\nmust_fail('reboot', 0xfee1dead, 672274793, 0x12345678, None)\n"
              "must_fail('settimeofday', None, None)\nname = os.uname().nodename.encode()\n"
              "must_fail('sethostname', name, len(name))\ndone()"),
        Probe("ioctl_tiocsti_inject", "c = ctypes.c_char(b'x')\nmust_fail('ioctl', 0, 0x5412, ctypes.byref(c))\n"
              "must_fail('ioctl', 1, 0x5412, ctypes.byref(c))\ndone()"),
        Probe("raise_own_limits", "import resource\n"
              "attempt('as', lambda: resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2))\n"
              "attempt('cpu', lambda: resource.setrlimit(resource.RLIMIT_CPU, (10**6, 10**6)))\ndone()"),
        # --- memory and disk ---------------------------------------------------------------------------------------
        Probe("memfd_bomb_issue14",
              "fds = []\nfor i in range(64):\n    fd = os.memfd_create(f'm{i}')\n    os.write(fd, b'x' * (16 << 20))\n"
              "    fds.append(fd)\nprint('survived with', len(fds) * 16, 'MB in memfds')",
              limits=SandboxLimits(timeout_s=10, audit_hook=False, memory_mb=256), check=_memory_held(256),
              expect_refused_marker=False),
        Probe("raw_memfd_bomb_without_python_wrapper",
              "total = 0\nfor i in range(64):\n    fd, _ = sc('memfd_create', b'x', 0)\n    if fd < 0: break\n"
              "    os.write(fd, b'y' * (16 << 20)); total += 16\nprint('survived with', total, 'MB')",
              limits=SandboxLimits(timeout_s=10, audit_hook=False, memory_mb=256), check=_memory_held(256),
              expect_refused_marker=False),
        Probe("dev_shm_fill",
              "attempt('shm', lambda: open('/dev/shm/atlas-fill', 'wb'))\n"
              "import multiprocessing.shared_memory as sm\n"
              "attempt('shared_memory', lambda: sm.SharedMemory('atlas-fill2', create=True, size=4096))\ndone()"),
        Probe("sysv_shm_and_mqueue", "libc.shmget.restype = ctypes.c_int\n"
              "must_fail('shmget', 0, 4096, 0o1000 | 0o600)\nmust_fail('mq_open', b'atlas', 0o100 | 2, 0o600, None)\n"
              "done()"),
        Probe("anonymous_memory_bomb",
              "chunks = []\nfor _ in range(64):\n    chunks.append(bytearray(16 << 20))\nprint('survived')",
              limits=SandboxLimits(timeout_s=10, audit_hook=False, memory_mb=256), check=_memory_held(256),
              expect_refused_marker=False),
        Probe("scratch_disk_fill_issue14",
              "written = 0\ntry:\n    for i in range(40):\n        with open(f'fill{i}.bin', 'wb') as fh:\n"
              "            fh.write(b'x' * (16 << 20))\n        written += 16\nexcept OSError as e:\n"
              "    print('stopped after', written, 'MB:', e)\nESCAPES.extend(['disk'] if written > 64 else [])\ndone()",
              limits=SandboxLimits(timeout_s=10, audit_hook=False, memory_mb=512, disk_mb=64),
              check=lambda r: (("No space left" in r.stdout) or pytest.fail(r.stdout))),
        Probe("single_file_over_file_limit",
              "attempt('big', lambda: open('big.bin', 'wb').write(b'x' * (20 << 20)))\ndone()"),
        # --- reading what is not on the allow-list ---------------------------------------------------------------
        Probe("read_etc_shadow", "attempt('shadow', lambda: print(len(open('/etc/shadow').read())))\n"
              "attempt('gshadow', lambda: print(len(open('/etc/gshadow').read())))\ndone()"),  # no hashes in logs
        Probe("read_host_secret_file", "attempt('secret', lambda: print(open('@SECRET@').read()))\ndone()"),
        Probe("read_project_tree",
              "attempt('pyproject', lambda: print(open('@PROJECT@/pyproject.toml').read()))\n"
              "attempt('src', lambda: print(open('@PROJECT@/src/atlas_router/tools/sandbox.py').read()))\n"
              "attempt('tests', lambda: print(os.listdir('@PROJECT@/tests')))\n"
              "attempt('list', lambda: print('LISTED', sorted(os.listdir('@PROJECT@'))))\n"
              "done()"),
        Probe("import_the_project_package",
              "attempt('import', lambda: __import__('atlas_router'))\n"
              "attempt('venv cfg', lambda: print(open('@PROJECT@/.venv/pyvenv.cfg').read()))\n"
              "attempt('venv bin', lambda: print(open('@PROJECT@/.venv/bin/atlas').read()))\ndone()"),
        Probe("list_host_root_home",
              "attempt('root', lambda: print('LISTED', sorted(os.listdir('/'))))\n"
              "attempt('home', lambda: print('LISTED', sorted(os.listdir('/root'))))\n"
              "attempt('ssh', lambda: os.listdir('/root/.ssh'))\nattempt('var', lambda: os.listdir('/var/log'))\ndone()"),
        Probe("symlink_and_hardlink_escape",
              "os.symlink('/etc/shadow', 'l1')\nattempt('symlink read', lambda: print(len(open('l1').read())))\n"
              "os.symlink('@SECRET@', 'l2')\nattempt('symlink secret', lambda: print(open('l2').read()))\n"
              "attempt('hardlink', lambda: os.link('/etc/passwd', 'h1'))\ndone()"),
        Probe("proc_and_sys_knobs",
              "attempt('sysrq', lambda: open('/proc/sysrq-trigger', 'r+b').close())\n"  # opened, never written
              "attempt('core_pattern', lambda: open('/proc/sys/kernel/core_pattern', 'r+b').close())\n"
              "attempt('cgroup', lambda: open('/sys/fs/cgroup/memory/cgroup.procs', 'r+b').close())\n"
              "attempt('kallsyms', lambda: print(open('/proc/kallsyms').read(100)))\n"
              "attempt('net', lambda: os.listdir('/sys/class/net'))\ndone()"),
        Probe("device_nodes_kvm_mem_disk",
              "attempt('kvm', lambda: open('/dev/kvm', 'rb'))\nattempt('mem', lambda: open('/dev/mem', 'rb'))\n"
              "attempt('vda', lambda: open('/dev/vda', 'rb'))\nattempt('tty', lambda: open('/dev/tty', 'rb'))\n"
              "attempt('mknod', lambda: os.mknod('kvm2', 0o600 | 0o020000, os.makedev(10, 232)))\ndone()"),
        # --- writing outside ---------------------------------------------------------------------------------
        Probe("write_outside_scratch",
              "attempt('outside', lambda: open('@OUTSIDE@', 'w').write('x'))\n"
              "attempt('etc', lambda: open('/etc/passwd', 'r+b').close())\n"  # opened for writing, never written
              "attempt('site', lambda: open(os.__file__, 'r+b').close())\n"
              "attempt('tmp', lambda: os.listdir('/tmp') and open('@HOSTPROBE@', 'xb').close())\n"
              "done()"),
        # --- the report channel --------------------------------------------------------------------------------
        Probe("forge_verdict_on_report_pipe",
              "fake = b'{\"layers\": {}}\\n{\"status\": \"ok\"}\\n'\n"
              "for fd in range(3, 64):\n    try:\n        os.write(fd, fake)\n    except OSError:\n        pass\n"
              "sys.stdout.write('{\"status\": \"ok\"}\\n')\nsys.exit(3)",
              check=lambda r: (not r.ok and r.exit_code == 3 and r.error_kind == "exit") or pytest.fail(str(r)),
              expect_refused_marker=False),
        Probe("forge_success_after_exception",
              "fake = b'{\"status\": \"ok\"}\\n'\nfor fd in range(3, 64):\n    try:\n        os.write(fd, fake)\n"
              "    except OSError:\n        pass\nraise RuntimeError('tests failed')",
              check=lambda r: (not r.ok and r.error_kind != "sandbox") or pytest.fail(str(r)),
              expect_refused_marker=False),
        Probe("inherited_descriptors_fork_server_socket",
              "import stat\nfor name in os.listdir('/proc/self/fd'):\n    fd = int(name)\n    try:\n"
              "        mode = os.fstat(fd).st_mode\n    except OSError:\n        continue\n"
              "    print(fd, stat.S_IFMT(mode))\n    if stat.S_ISSOCK(mode):\n        ESCAPES.append(f'socket fd {fd}')\n"
              "    if fd > 2 and stat.S_ISREG(mode):\n        ESCAPES.append(f'file fd {fd}')\ndone()"),
        # --- network and sockets -------------------------------------------------------------------------------
        Probe("tcp_connect_host_server",
              "attempt('tcp', lambda: socket.create_connection(('127.0.0.1', @PORT@), timeout=2))\n"
              "attempt('tcp6', lambda: socket.create_connection(('::1', @PORT@), timeout=2))\ndone()"),
        Probe("unix_datagram_sendto_host_path",
              "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
              "attempt('sendto', lambda: s.sendto(b'pwn', '@UNIXPATH@'))\n"
              "addr = struct.pack('H', socket.AF_UNIX) + b'@UNIXPATH@\\0'\n"
              "must_fail('sendto', s.fileno(), b'pwn', 3, 0, addr, len(addr))\ndone()"),
        Probe("unix_sendmsg_and_connect_host_path",
              "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
              "attempt('sendmsg', lambda: s.sendmsg([b'pwn'], [], 0, '@UNIXPATH@'))\n"
              "attempt('connect', lambda: s.connect('@UNIXPATH@'))\n"
              "t = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\nattempt('stream', lambda: t.connect('@UNIXPATH@'))\n"
              "done()"),
        Probe("abstract_unix_socket",
              "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
              "attempt('abstract', lambda: s.sendto(b'pwn', @ABSTRACT@))\ndone()"),
        Probe("bind_listen_and_raw_sockets",
              "attempt('bind', lambda: socket.socket().bind(('0.0.0.0', 0)))\n"
              "attempt('raw', lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))\n"
              "attempt('netlink', lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))\n"
              "attempt('dns', lambda: socket.getaddrinfo('example.com', 80))\ndone()"),
        # --- the audit hook removed from user code, then the same attacks (issue 14, item 5) --------------------
        Probe("audit_hook_removed_via_gc_then_ctypes",
              "import gc\nfor obj in gc.get_objects():\n    if isinstance(obj, dict) and 'os.kill' in obj and 'open' in obj:\n"
              "        obj.clear()\nprint('hook tables cleared')\n@PRELUDE@\n"
              "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
              "attempt('sendto', lambda: s.sendto(b'pwn', '@UNIXPATH@'))\n"
              "must_fail('kill', @CANARY@, 9)\nmust_fail('pidfd_open', @TESTPID@, 0)\n"
              "attempt('shadow', lambda: print(len(open('/etc/shadow').read())))\ndone()", limits=WITH_HOOK),
        Probe("hooked_run_refuses_pidfd_and_kill",
              "import os, signal\nfor target in (os.getppid(), @TESTPID@, @CANARY@):\n"
              "    sig = 9 if target == @CANARY@ else signal.SIGCONT\n    try:\n"
              "        signal.pidfd_send_signal(os.pidfd_open(target), sig)\n        print('ESCAPED pidfd')\n"
              "    except OSError as e:\n        print('refused', e)\n    try:\n        os.kill(target, sig)\n"
              "        print('ESCAPED kill')\n    except OSError as e:\n        print('refused', e)\n"
              "print('all refused')", limits=WITH_HOOK),
    ]
    return p


PROBES = _probes()


def test_there_are_at_least_forty_probes():
    assert len(PROBES) >= 40 and len({p.name for p in PROBES}) == len(PROBES)
    assert platform.machine() == "x86_64"  # the syscall numbers above; CI runs on x86_64


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_attack_is_refused_and_host_unaffected(probe: Probe, host: Host):
    code = probe.code.replace("@PRELUDE@", PRELUDE) if "@PRELUDE@" in probe.code else PRELUDE + probe.code
    if probe.limits.audit_hook and "@PRELUDE@" not in probe.code:
        code = probe.code  # the hook refuses ctypes itself: such probes use plain Python
    for token, value in (("@CANARY@", host.canary.pid), ("@TESTPID@", os.getpid()), ("@TESTPGID@", os.getpgrp()),
                         ("@OUTSIDE@", host.outside), ("@SECRET@", host.secret), ("@PROJECT@", PROJECT),
                         ("@PORT@", host.tcp_port), ("@UNIXPATH@", host.unix_path),
                         ("@ABSTRACT@", repr(host.abstract_name)), ("@HOSTPROBE@", HOST_PROBE_FILE)):
        code = code.replace(token, str(value))
    result = run_python(code, probe.limits)
    assert "ESCAPED" not in result.stdout and "LISTED" not in result.stdout, result.stdout
    if probe.expect_refused_marker:
        assert "all refused" in result.stdout, (result.stdout, result.stderr, result.error)
    if probe.check is not None:
        probe.check(result)
    _assert_host_unaffected(host, result)
    assert os.getpid() and signal.getsignal(signal.SIGTERM) is not None  # this process is alive and intact
