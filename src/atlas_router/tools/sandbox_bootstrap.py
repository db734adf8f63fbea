"""The sandbox child: lock the process down with the kernel, then run the user's code.

Started once per parent process as ``python -I -B sandbox_bootstrap.py --serve SOCKET_FD`` (the fork
server, see ``serve`` and ``atlas_router.tools.sandbox_forkserver``); every run is a fresh fork of it that
drops the server's descriptors first. The job (code, files, limits, the seccomp program) comes as an
unlinked file written by the parent with ``marshal``. Standard library only. The layers, outermost first:

1. a memory cgroup (joined before anything else), so heap, memfd, shared memory and the scratch tmpfs all
   count against ``memory_mb``;
2. new PID, mount, network, IPC and UTS namespaces (plus a user namespace when the host is not root):
   the process that runs the code is PID 1 of an otherwise empty PID namespace, so no host process can
   be named, let alone signalled, and it has no network interface but a down loopback;
3. a private, read-only root: a tmpfs holding read-only binds of /usr, /lib*, a few /etc files, the
   interpreter's standard library and site-packages (not the project tree, not this package), four
   device nodes (no /dev/shm, no /dev/kvm), a fresh /proc, and the scratch directory as a size-limited
   tmpfs (the disk quota); the rest of the host's file system is not there at all;
4. a separate uid when the host runs as root (each run its own: ``UID_BASE`` + the host pid), no
   capabilities, no new privileges;
5. resource limits: address space, CPU seconds, file size, threads, no core files;
6. Landlock: a read allow-list, writes only in the scratch directory, no TCP, no signals or abstract
   UNIX sockets outside the sandbox (ABI 6 scopes), no device ioctls;
7. seccomp: a default-deny allow-list built by the parent (``sandbox_policy``);
8. optionally a Python audit hook that refuses the same things earlier, with a clearer message. It is a
   convenience: every layer above holds with it switched off.

A layer the kernel refuses is reported as ``unavailable (...)`` on the report's first line, written
before the user's code runs (so the code cannot rewrite it); with ``require_all_layers`` the code does not
run at all then. The verdict is the parent's: it comes from the exit status, the parent's clock and its
cgroup counters. The report's last line is a diagnostic only (what exception, which line).
"""

from __future__ import annotations

import builtins
import ctypes
import errno
import marshal
import os
import resource
import signal
import sys

CODE_NAME = "<code>"
UID_BASE = 2_000_000
REFUSED_EXIT = 125  # the bootstrap refused to run the code (a required layer is missing)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 22, 36, 38
SECCOMP_MODE_FILTER = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
# What the code may read besides Python itself: system libraries, a few harmless /etc files, devices.
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/timezone",
             "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/mime.types", "/etc/os-release",
             "/etc/protocols", "/etc/services")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
PROC_FILES = ("/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat")
SYS_DIRS = ("/sys/devices/system/cpu",)


class SandboxViolation(PermissionError):
    """Raised by the audit hook; a PermissionError so libraries that tolerate EPERM keep working."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(errno.EPERM, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


_violations: list[SandboxViolation] = []
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: None if s is None else s.encode())
    _check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)


def python_roots() -> list[str]:
    """The interpreter's own files: its lib folder (standard library, lib-dynload) and the site-packages
    folders. Other import-path entries (an editable project's ``src``) are left out on purpose."""
    import site

    roots = {os.path.join(p, "lib") for p in (sys.base_prefix, sys.base_exec_prefix)}
    roots.update(site.getsitepackages())
    keep = sorted(os.path.realpath(r) for r in roots if os.path.isdir(r))
    # drop roots inside another root, and system folders covered by SYSTEM_DIRS anyway
    out: list[str] = []
    for r in keep:
        if any(r == o or r.startswith(o + "/") for o in out + list(SYSTEM_DIRS)):
            continue
        out.append(r)
    return out


def hidden_packages(roots: list[str]) -> list[str]:
    """This project's own package where it sits inside an allowed folder (a non-editable install)."""
    return [os.path.join(r, "atlas_router") for r in roots if os.path.isdir(os.path.join(r, "atlas_router"))]


# --- stage 1 (still privileged): cgroup, namespaces, the private root ------------------------------------

def join_cgroup(job: dict) -> str:
    procs = job.get("cgroup_procs")
    if not procs:
        return job.get("cgroup_reason") or "off"
    try:
        _write(procs, str(os.getpid()))
    except OSError as err:
        return f"unavailable (cannot join: {err.strerror})"
    return f"memory v{job['cgroup_version']} {job['memory_mb']} MB"


def enter_namespaces() -> tuple[str, bool]:
    """Unshare everything we can; (what was done, whether a user namespace was needed)."""
    base = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if os.geteuid() == 0 and libc.unshare(base) == 0:
        return "pid+mount+net+ipc+uts", False
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(CLONE_NEWUSER | base) == 0:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
        return "user+pid+mount+net+ipc+uts", True
    for flags, label in ((CLONE_NEWUSER | CLONE_NEWNET, "user+net"), (CLONE_NEWNET, "net")):
        if libc.unshare(flags) == 0:
            return f"unavailable (only {label}: {os.strerror(ctypes.get_errno())})", flags & CLONE_NEWUSER != 0
    return f"unavailable ({os.strerror(ctypes.get_errno())})", False


def _locked_flags(path: str) -> int:
    """The flags of the mount holding ``path``, which a read-only remount must keep (user namespaces)."""
    f = os.statvfs(path).f_flag
    pairs = ((2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME), (2048, MS_NODIRATIME),
             (4096, MS_RELATIME))
    return sum(ms for st, ms in pairs if f & st)


def _bind(source: str, newroot: str, target: str | None = None) -> None:
    """Bind ``source`` read-only at the same path (or ``target``) under ``newroot``; symlinks are copied."""
    dest = newroot + (target or source)
    if os.path.islink(source) and target is None:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if not os.path.lexists(dest):
            os.symlink(os.readlink(source), dest)
        return
    if os.path.isdir(source):
        os.makedirs(dest, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if not os.path.exists(dest):
            open(dest, "a").close()
    _mount(source, dest, None, MS_BIND | MS_REC)
    _mount(None, dest, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | _locked_flags(dest))


def build_root(newroot: str, scratch: str, roots: list[str], job: dict, uid: int, gid: int) -> None:
    """The private root under ``newroot`` (an empty directory); entered later by ``enter_root``."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here propagates to the host
    _mount("tmpfs", newroot, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path in SYSTEM_DIRS + ETC_FILES + SYS_DIRS:
        if os.path.lexists(path):
            _bind(path, newroot)
    for path in roots:
        _bind(path, newroot)
    for path in hidden_packages(roots):
        _mount("tmpfs", newroot + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0555")
    os.makedirs(newroot + "/dev")
    for dev in DEVICES:
        if os.path.exists(dev):
            open(newroot + dev, "a").close()
            _mount(dev, newroot + dev, None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{newroot}/dev/{name}")
    os.makedirs(newroot + scratch)
    _mount("tmpfs", newroot + scratch, "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={int(job['disk_mb'])}m,mode=0700,uid={uid},gid={gid}")
    os.makedirs(newroot + "/proc")
    os.makedirs(newroot + "/.oldroot")


def enter_root(newroot: str) -> str:
    """In the new PID namespace: a /proc of its own, then pivot into the new root and drop the old one."""
    proc = "own"
    try:
        _mount("proc", newroot + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        proc = "none"
    os.chdir(newroot)
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, "pivot_root: unknown architecture")
    _check(libc.syscall(number, b".", b".oldroot"), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.oldroot", MNT_DETACH), "umount old root")
    os.rmdir("/.oldroot")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return f"private read-only root, {proc} /proc"


def supervise(child: int, report_fd: int) -> None:
    """The outer process: wait for the sandboxed PID 1 and leave with its status (exit code or signal)."""
    os.close(report_fd)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


# --- stage 2 (the sandboxed PID 1): drop privileges, limits, Landlock, seccomp --------------------------

class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_privileges(uid: int | None, gid: int | None) -> str:
    """A uid of its own when the host is root; in every case no capabilities and no new privileges."""
    label = "unchanged (host is not root)"
    if uid is not None and gid is not None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        label = str(uid)
    data = (_CapData * 2)()
    _check(libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data), "capset")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    return label


def set_limits(job: dict) -> None:
    """Apply the job's resource limits; lowering limits is always permitted."""
    mem = int(job["memory_mb"]) * 1024 * 1024
    cpu = int(job["cpu_s"])
    fsize = int(job["file_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
    if os.getuid() >= UID_BASE:  # counted per uid: only meaningful for a uid of its own
        resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))
    # Exceeding the file size limit raises OSError(EFBIG) instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def read_allow_list(scratch: str, roots: list[str]) -> list[str]:
    return [p for p in SYSTEM_DIRS + ETC_FILES + SYS_DIRS + PROC_FILES + DEVICES if os.path.exists(p)] + roots


def landlock(scratch: str, roots: list[str]) -> tuple[str, bool]:
    """Read allow-list, writes in scratch only, no TCP, signal and abstract-socket scopes; (label, complete)."""
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return f"unavailable ({os.strerror(ctypes.get_errno())})", False
    read_file, read_dir, write_file, truncate = 1 << 2, 1 << 3, 1 << 1, (1 << 14 if abi >= 3 else 0)
    tree = sum(1 << b for b in (4, 5, 6, 7, 8, 9, 10, 11, 12)) | (1 << 13 if abi >= 2 else 0)
    ioctl_dev = 1 << 15 if abi >= 5 else 0
    handled = 1 | write_file | read_file | read_dir | truncate | tree | ioctl_dev  # 1 = execute
    file_rights = write_file | read_file | truncate | ioctl_dev  # the only rights a rule on a file may hold
    net = 3 if abi >= 4 else 0  # bind and connect TCP: handled, never allowed
    scopes = 3 if abi >= 6 else 0  # abstract UNIX sockets and signals stay inside the sandbox
    attr = _RulesetAttr(handled, net, scopes)
    size = 24 if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        return f"unavailable ({os.strerror(ctypes.get_errno())})", False
    rules = [(p, read_file | read_dir) for p in read_allow_list(scratch, roots)]
    scratch_rights = handled & ~(1 | ioctl_dev | (1 << 6) | (1 << 11))  # no exec, char/block devices
    rules += [(scratch, scratch_rights), ("/dev/null", write_file | read_file | truncate)]
    try:
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not os.path.isdir(path):
                    access &= file_rights
                rule = _PathBeneathAttr(access, fd)
                if libc.syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule),
                                ctypes.c_uint32(0)) != 0:
                    return f"unavailable (rule for {path}: {os.strerror(ctypes.get_errno())})", False
            finally:
                os.close(fd)
        if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return f"unavailable ({os.strerror(ctypes.get_errno())})", False
    finally:
        os.close(ruleset)
    parts = ["fs"] + (["net"] if net else []) + (["signal+abstract-unix scopes"] if scopes else [])
    return f"abi{abi} " + "+".join(parts), bool(scopes)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp(program: bytes) -> str:
    """Load the parent's BPF allow-list (no_new_privs is already set)."""
    if not program:
        return "unavailable (the parent could not build the filter)"
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        return f"unavailable ({os.strerror(ctypes.get_errno())})"
    return "allow-list"


def make_audit_hook(scratch: str):  # noqa: C901 - one flat table of events
    """The friendly layer: refuse forbidden operations with a clear message before the kernel would."""
    scratch_real = os.path.realpath(scratch)
    allowed_files = {"/dev/null"}
    realpath, fspath, getpid = os.path.realpath, os.fspath, os.getpid

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an already-open descriptor
        try:
            p = realpath(fspath(path))
        except (TypeError, ValueError):
            return False
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        return p == scratch_real or p.startswith(scratch_real + os.sep) or p in allowed_files

    def refuse(kind: str, message: str):
        err = SandboxViolation(kind, message)
        _violations.append(err)
        raise err

    def deny_write(path) -> None:
        if not inside(path):
            shown = os.fsdecode(path) if isinstance(path, (str, bytes)) else str(path)
            refuse("write", f"write outside the scratch directory is blocked: {shown}")

    def on_open(args) -> None:
        path, _mode, flags = args
        if flags is not None and flags & WRITE_FLAGS:
            deny_write(path)

    def process(_args) -> None:
        refuse("process", "process creation is blocked")

    def network(_args) -> None:
        refuse("network", "network access is blocked in the sandbox")

    def native(_args) -> None:
        refuse("native", "native code access (ctypes) is blocked in the sandbox")

    def dlopen(args) -> None:
        if args and args[0] is not None:  # CDLL(None) happens on `import ctypes`; loading libraries does not
            native(args)

    def signal_other(args) -> None:
        if args and args[0] != getpid():
            refuse("signal", "signalling other processes is blocked")

    def first_path(args) -> None:
        deny_write(args[0])

    def two_paths(args) -> None:
        deny_write(args[0])
        deny_write(args[1])

    def second_path(args) -> None:
        deny_write(args[1])

    handlers = {"open": on_open}
    for ev in ("os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
               "os.startfile", "pty.spawn"):
        handlers[ev] = process
    for ev in ("socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
               "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.getnameinfo", "socket.sendto",
               "socket.sendmsg", "urllib.Request", "http.client.connect", "ftplib.connect", "smtplib.connect",
               "imaplib.open", "poplib.connect", "nntplib.connect", "telnetlib.Telnet.open", "webbrowser.open"):
        handlers[ev] = network
    for ev in ("ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function", "ctypes.cdata", "ctypes.cdata/buffer",
               "ctypes.string_at", "ctypes.wstring_at", "ctypes.addressof", "ctypes.set_errno", "ctypes.set_exception"):
        handlers[ev] = native
    handlers["ctypes.dlopen"] = dlopen
    for ev in ("os.kill", "os.killpg", "signal.pthread_kill", "os.pidfd_open"):
        handlers[ev] = signal_other
    for ev in ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime", "os.chflags",
               "os.lchflags", "os.lchown", "os.setxattr", "os.removexattr", "os.mkfifo", "os.mknod", "shutil.rmtree"):
        handlers[ev] = first_path
    for ev in ("os.rename", "os.link"):
        handlers[ev] = two_paths
    handlers["os.symlink"] = second_path
    lookup = handlers.get

    def hook(event: str, args: tuple) -> None:
        handler = lookup(event)
        if handler is not None:
            handler(args)

    return hook


def _user_line(tb) -> int | None:
    import traceback

    line = None
    for frame in traceback.extract_tb(tb):
        if frame.filename == CODE_NAME:
            line = frame.lineno
    return line


def _user_traceback(err: BaseException) -> str:
    """The traceback restricted to the user's own frames (the bootstrap's frames are noise)."""
    import traceback

    te = traceback.TracebackException.from_exception(err)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename == CODE_NAME])
    return "".join(te.format())


def run_user_code(code: str, report: dict) -> int:
    """Compile and run the code as ``__main__``; fills ``report`` and returns the exit status.
    (traceback and linecache are imported only on the error path: start-up time is the sandbox's cost.)"""
    try:
        compiled = compile(code, CODE_NAME, "exec", dont_inherit=True)
    except SyntaxError as err:
        import traceback

        report.update(status="exception", type="SyntaxError", message=err.msg or "invalid syntax", line=err.lineno)
        sys.stderr.write("".join(traceback.format_exception_only(type(err), err)))
        return 1
    namespace = {"__name__": "__main__", "__builtins__": builtins, "__file__": "main.py"}
    try:
        exec(compiled, namespace)  # noqa: S102 - running the user's code is the point
    except SystemExit as err:
        status = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        if err.code is not None and not isinstance(err.code, int):
            sys.stderr.write(f"{err.code}\n")
        report.update(status="exit", code=status)
        return status
    except BaseException as err:  # anything the code raised is the result, reported with its line
        import linecache

        linecache.cache[CODE_NAME] = (len(code), None, code.splitlines(True), CODE_NAME)
        line = _user_line(err.__traceback__)
        if isinstance(err, SandboxViolation):
            report.update(status="violation", kind=err.kind, message=err.message, line=line)
        elif isinstance(err, MemoryError):
            report.update(status="memory", type=type(err).__name__, message=str(err), line=line)
        else:
            report.update(status="exception", type=type(err).__name__, message=str(err), line=line)
        try:
            sys.stderr.write(_user_traceback(err))
        except MemoryError:
            pass
        return 1
    report.update(status="ok")
    return 0


def _write_files(scratch: str, files: dict) -> None:
    import base64

    for name, (kind, content) in files.items():
        target = os.path.join(scratch, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(base64.b64decode(content) if kind == "b64" else content.encode("utf-8"))


def _json(value) -> str:
    """JSON for the report's flat values without importing ``json`` (it pulls in ``re``: start-up time)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_json(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    out = []
    for ch in str(value)[:4000]:
        code = ord(ch)
        if 0x20 <= code < 0x7F and ch not in '"\\':
            out.append(ch)
        elif code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    return '"' + "".join(out) + '"'


def _send(report_file, data: dict) -> None:
    try:
        report_file.write(_json(data) + "\n")
        report_file.flush()
    except Exception:  # a closed or broken report pipe must not change how the code ran
        pass


def run_job(job_fd: int, report_fd: int) -> None:
    """Lock down and run one job; never returns."""
    with os.fdopen(job_fd, "rb") as fh:
        job = marshal.loads(fh.read())  # written by the parent, never by user code
    scratch = job["scratch"]
    layers: dict[str, str] = {"cgroup": join_cgroup(job)}
    roots = python_roots()
    host_root = os.geteuid() == 0
    uid = gid = None
    private_root = False
    if job.get("namespaces", True):
        layers["namespaces"], _userns = enter_namespaces()
        pid_ns = not layers["namespaces"].startswith("unavailable")
        if host_root:
            uid = gid = UID_BASE + os.getpid()
        if pid_ns:
            try:
                build_root(scratch, scratch, roots, job, uid if uid is not None else os.geteuid(),
                           gid if gid is not None else os.getegid())
                private_root = True
            except OSError as err:
                layers["filesystem"] = f"unavailable ({err})"
            child = os.fork()
            if child:
                supervise(child, report_fd)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if private_root:
                try:
                    layers["filesystem"] = enter_root(scratch)
                except OSError as err:
                    layers["filesystem"] = f"unavailable ({err})"
                    private_root = False
    else:
        layers["namespaces"] = "off"
    layers.setdefault("filesystem", "host")
    layers["disk_quota"] = f"{job['disk_mb']} MB tmpfs" if private_root else "unavailable (no private root)"
    if host_root and not private_root:  # the host's Python may sit in a folder only root can enter
        uid = gid = None
        layers["uid"] = "unavailable (no private root: uid 0 without capabilities)"
    label = drop_privileges(uid, gid)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # again: a change of uid clears it
    layers.setdefault("uid", label)
    set_limits(job)
    os.chdir(scratch)
    _write_files(scratch, job.get("files", {}))
    if job.get("landlock", True):
        layers["landlock"], complete = landlock(scratch, roots)
        if not complete and not layers["landlock"].startswith("unavailable"):
            layers["landlock"] += " (no signal scope: needs ABI 6)"
    else:
        layers["landlock"] = "off"
    if job.get("seccomp", True):  # PID 1 of its own namespace may signal itself; otherwise nobody
        layers["seccomp"] = seccomp(job["seccomp_bpf"] if os.getpid() == 1 else job["seccomp_bpf_no_pid_ns"])
    else:
        layers["seccomp"] = "off"
    # Everything the user's program sees: scratch as cwd, home, temp dir (tempfile reads TMPDIR) and first
    # import path.
    os.environ["HOME"] = os.environ["TMPDIR"] = scratch
    sys.path[:] = [scratch] + [p for p in sys.path if any(p == r or p.startswith(r + "/") for r in roots)]
    sys.argv = ["main.py"]
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(errors="backslashreplace")
    report_file = os.fdopen(report_fd, "w", encoding="utf-8")
    # Required: every kernel layer, whether the kernel refused it or the caller switched it off.
    missing = sorted(k for k, v in layers.items() if v.startswith(("unavailable", "off")) or "(no signal scope" in v)
    if job.get("require_all_layers") and missing:
        _send(report_file, {"layers": layers, "refused": missing})
        os._exit(REFUSED_EXIT)
    if job.get("audit_hook", True):
        sys.addaudithook(make_audit_hook(scratch))
        layers["audit_hook"] = "on"
    else:
        layers["audit_hook"] = "off"
    _send(report_file, {"layers": layers})  # before the user's code: it cannot be rewritten
    report: dict = {}
    status = run_user_code(job["code"], report)
    if _violations and report["status"] != "violation":
        first = _violations[0]
        report["caught_violation"] = {"kind": first.kind, "message": first.message}
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # a closed or broken stream must not hide the report
        pass
    _send(report_file, report)
    os._exit(status & 0xFF if isinstance(status, int) else 1)


# --- the fork server ---------------------------------------------------------------------------------------
# Starting an interpreter is most of a short run's cost, so the parent keeps one warm process that only
# forks: each request (a header and five descriptors: stdin, stdout, stderr, report pipe, job file) becomes a
# fresh child that closes every descriptor of the server before doing anything else, then runs ``run_job``.
# The server answers with the child's pid and, when the child has been reaped, its wait status: the
# parent's verdict. It exits, killing its children, when the parent closes the socket.

def _worker(job_fds: list[int], closing: list[int], server: int) -> None:
    """The forked child: shed the server's descriptors and handlers, take the run's streams, run the job.
    Never returns (an exception here must not fall back into the server's loop)."""
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # no run outlives the server
        if os.getppid() != server:
            os._exit(1)
        for fd in closing:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()  # its own process group: the parent kills the whole run with one killpg
        stdin, stdout, stderr, report_fd, job_fd = job_fds
        for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
            os.dup2(fd, target)
        for fd in (stdin, stdout, stderr):
            if fd > 2:
                os.close(fd)
        # the server's streams pointed at /dev/null (seekable); these are pipes and a file now
        sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)
        sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)
        sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                                           closefd=False)
        run_job(job_fd, report_fd)
    except BaseException as err:  # a bug in the bootstrap: say what, on the run's stderr
        os.write(2, f"sandbox bootstrap failed: {type(err).__name__}: {err}\n".encode())
    finally:
        os._exit(1)


def serve(sock_fd: int) -> None:
    import array
    import select
    import socket
    import struct

    for fd in (0, 1):
        os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    sock = socket.socket(fileno=sock_fd)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    python_roots()  # warm: the site module's paths
    server = os.getpid()
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # a killed run's PID 1 is reaped here, not left to init
    children: set[int] = set()
    while True:
        try:
            ready, _, _ = select.select([sock, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
        if sock in ready:
            fds = array.array("i")
            msg, anc, _flags, _addr = sock.recvmsg(64, socket.CMSG_SPACE(5 * fds.itemsize))
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            if not msg:  # the parent is gone: so are its runs
                for pid in children:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except OSError:
                        pass
                os._exit(0)
            (tag,) = struct.unpack("Q", msg[:8])
            if len(fds) != 5:
                for fd in fds:
                    os.close(fd)
                sock.send(struct.pack("QBqi", tag, ord("F"), 0, 0))
                continue
            pid = os.fork()
            if pid == 0:
                _worker(list(fds), [sock.fileno(), wake_r, wake_w], server)
            for fd in fds:
                os.close(fd)
            children.add(pid)
            sock.send(struct.pack("QBqi", tag, ord("S"), pid, 0))
        while True:  # reap runs and the orphans that reach this subreaper; report runs only
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in children:
                children.discard(pid)
                sock.send(struct.pack("QBqi", 0, ord("E"), pid, status))


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] != "--serve":
        sys.exit("usage: sandbox_bootstrap.py --serve SOCKET_FD (started by atlas_router.tools.sandbox)")
    serve(int(sys.argv[2]))


if __name__ == "__main__":
    main()
