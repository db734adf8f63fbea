"""The sandbox's seccomp policy: a default-deny allow-list, compiled once in the parent to raw BPF.

Everything not listed fails with EPERM in the child (glibc falls back from ``clone3`` on ENOSYS, so that
one answers ENOSYS). Signals only reach the child itself, which is PID 1 of its own PID namespace; the
pidfd calls, ``tkill``, ``rt_(tg)sigqueueinfo``, ``process_vm_*``, ``ptrace``, ``connect``/``bind``,
``sendmsg`` and address-carrying ``sendto`` (datagrams to host UNIX path sockets), mount/namespace/uid
calls, ``io_uring``, ``bpf``, ``keyctl``, ``userfaultfd`` and the like are simply absent. libseccomp also
kills any syscall made through a foreign ABI (the 32-bit ``int 0x80`` entry), which would otherwise
bypass the numbers checked here.

The program is built with ``pyseccomp`` (libseccomp) in the parent and handed to the child as bytes, so
the child loads it with one ``prctl`` and never imports libseccomp.
"""

from __future__ import annotations

import errno
import functools
import socket
import tempfile

# Harmless calls an interpreter, numpy, sympy and ordinary user programs make.
ALLOWED = (
    # files and descriptors (Landlock, the read-only root and the uid decide *which* files)
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
    "open", "openat", "openat2", "close", "close_range", "creat", "lseek", "_llseek",
    "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat", "faccessat2",
    "getdents", "getdents64", "getcwd", "chdir", "fchdir", "readlink", "readlinkat",
    "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2",
    "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "umask",
    "utime", "utimes", "utimensat", "futimesat", "truncate", "ftruncate", "fallocate", "fadvise64",
    "fsync", "fdatasync", "sync_file_range", "flock", "fcntl", "dup", "dup2", "dup3", "pipe", "pipe2",
    "sendfile", "copy_file_range", "splice", "tee", "getxattr", "lgetxattr", "fgetxattr", "listxattr",
    "llistxattr", "flistxattr",
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
    "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "timerfd_create", "timerfd_settime",
    "timerfd_gettime", "signalfd", "signalfd4",
    # memory (a cgroup or RLIMIT_AS bounds it)
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync", "mincore", "membarrier",
    "pkey_alloc", "pkey_free", "pkey_mprotect",
    # threads, time, identity (reading only)
    "futex", "futex_waitv", "set_robust_list", "get_robust_list", "set_tid_address", "rseq", "arch_prctl",
    "sched_yield", "sched_getaffinity", "sched_getparam", "sched_getscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "getcpu", "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres",
    "gettimeofday", "time", "times", "getitimer", "setitimer", "alarm", "getrusage", "sysinfo", "uname",
    "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid",
    "getresgid", "getpgrp", "getpgid", "getsid", "capget", "getrandom", "getrlimit", "setrlimit",
    "getpriority", "get_mempolicy", "wait4", "waitid", "exit", "exit_group", "restart_syscall",
    # signals to oneself (handlers, masks); delivery to others is the kill rules below
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend", "rt_sigtimedwait",
    "sigaltstack", "pause",
    # sockets that cannot leave: no connect/bind/listen/accept, no sendmsg, sendto only without an address
    "socketpair", "recvfrom", "recvmsg", "recvmmsg", "shutdown", "getsockname", "getpeername",
    "getsockopt", "setsockopt",
)
# ioctl requests a Python program needs on its own pipes and files: isatty, FIONREAD, (non)blocking, CLOEXEC.
IOCTLS = (0x5401, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451)
# prctl options: thread names, reading the no-new-privs/seccomp/dumpable state.
PRCTLS = (15, 16, 3, 21, 39, 23)
CLONE_THREAD = 0x00010000
SOCKET_DOMAINS = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)


@functools.lru_cache(maxsize=8)
def seccomp_program(self_pid: int | None, allow_memfd: bool) -> bytes:
    """The BPF program (raw ``struct sock_filter`` array). ``self_pid`` is the child's pid as it sees
    itself (1 inside its PID namespace), or None when unknown: then no signal may be sent at all.
    ``allow_memfd`` only where a memory cgroup accounts memfd pages."""
    import pyseccomp as sc

    f = sc.SyscallFilter(defaction=sc.ERRNO(errno.EPERM))
    allow = sc.ALLOW
    for name in ALLOWED + (("memfd_create",) if allow_memfd else ()):
        try:
            f.add_rule(allow, name)
        except (OSError, ValueError):  # a name this libseccomp or architecture does not know
            continue
    # Threads only: clone without CLONE_THREAD (fork) is refused; clone3 hides its flags in memory.
    f.add_rule(allow, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, CLONE_THREAD))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for request in IOCTLS:
        f.add_rule(allow, "ioctl", sc.Arg(1, sc.EQ, request))
    for option in PRCTLS:
        f.add_rule(allow, "prctl", sc.Arg(0, sc.EQ, option))
    for domain in SOCKET_DOMAINS:
        f.add_rule(allow, "socket", sc.Arg(0, sc.EQ, domain))
    f.add_rule(allow, "sendto", sc.Arg(4, sc.EQ, 0))  # connected sockets only: no destination address
    f.add_rule(allow, "prlimit64", sc.Arg(0, sc.EQ, 0))  # its own limits (raising hard limits needs a cap)
    if self_pid is not None:
        f.add_rule(allow, "kill", sc.Arg(0, sc.EQ, self_pid))
        f.add_rule(allow, "tgkill", sc.Arg(0, sc.EQ, self_pid))
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()
