"""The sandbox child: lock the process down, then run the user's code and report how it ended.

Run as ``python -I -B sandbox_bootstrap.py JOB_FILE REPORT_FD`` by ``atlas_router.tools.sandbox``; never
imported by the library. The layers, outermost first (each falls back silently when the kernel refuses,
and the report says which ones are active):

1. namespaces: a new user + network namespace, so the child has no network interface but a down
   loopback and no capabilities on the host;
2. resource limits: address space, CPU seconds, file size, no core files (not the process count: the
   kernel ignores RLIMIT_NPROC for root, so process creation is refused by seccomp and the hook instead);
3. Landlock: the kernel refuses file writes, creations and removals outside the scratch directory, and
   reads outside the system and Python folders (so no home folders, project files or other processes'
   /proc entries, whose environment holds API keys);
4. seccomp: the kernel refuses fork, exec, signals to other processes, and socket connect/bind;
5. a Python audit hook that refuses the same things first, with a clear message.

Only the standard library and ``pyseccomp`` are used here; everything runs before the user's code.
"""

from __future__ import annotations

import builtins
import ctypes
import errno
import json
import linecache
import os
import resource
import signal
import sys
import traceback

CODE_NAME = "<code>"
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
PR_SET_NO_NEW_PRIVS = 38
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class SandboxViolation(PermissionError):
    """Raised by the audit hook; a PermissionError so libraries that tolerate EPERM keep working."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(errno.EPERM, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


_violations: list[SandboxViolation] = []


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def isolate_namespaces(libc: ctypes.CDLL) -> str:
    """Enter new user+network namespaces (or network only); returns what was done."""
    for flags, label in ((CLONE_NEWUSER | CLONE_NEWNET, "user+net"), (CLONE_NEWNET, "net")):
        if libc.unshare(flags) == 0:
            return label
    return "none"


def set_limits(job: dict) -> None:
    """Apply the job's resource limits; lowering limits is always permitted."""
    mem = int(job["memory_mb"]) * 1024 * 1024
    cpu = int(job["cpu_s"])
    fsize = int(job["file_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Exceeding the file size limit raises OSError(EFBIG) instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def read_roots(scratch: str) -> list[str]:
    """What the code may read: the system's libraries and config, this Python and its packages, its own
    /proc entry and the scratch folder. Not home folders, other processes' /proc (their environment holds
    API keys), or the project tree."""
    roots = ["/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/dev",
             "/sys/devices/system/cpu", "/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", scratch,
             sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))]
    roots += [p for p in sys.path if p]
    return [r for r in dict.fromkeys(roots) if os.path.exists(r)]


def landlock_fs(libc: ctypes.CDLL, scratch: str) -> str:
    """Let the kernel refuse writes outside ``scratch`` (and /dev/null) and reads outside ``read_roots``."""
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return "unavailable"
    write_file, read_file, read_dir, truncate = 1 << 1, 1 << 2, 1 << 3, (1 << 14 if abi >= 3 else 0)
    # remove dir/file, make char/dir/reg/sock/fifo/block/sym, refer (abi 2)
    tree = sum(1 << b for b in (4, 5, 6, 7, 8, 9, 10, 11, 12)) | (1 << 13 if abi >= 2 else 0)
    handled = write_file | read_file | read_dir | truncate | tree
    file_rights = write_file | read_file | truncate  # the only rights a rule on a non-directory may hold
    attr = _RulesetAttr(handled)
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        return "unavailable"
    rules = [(root, read_file | read_dir) for root in read_roots(scratch)]
    rules += [(scratch, handled), ("/dev/null", write_file | read_file | truncate)]
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
                    return "unavailable"
            finally:
                os.close(fd)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return "unavailable"
        if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return "unavailable"
    finally:
        os.close(ruleset)
    return f"abi{abi}"


def seccomp_filter() -> str:
    """Let the kernel refuse process creation, exec, signals to others and socket connect/bind."""
    try:
        import pyseccomp as sc

        f = sc.SyscallFilter(defaction=sc.ALLOW)
        deny = sc.ERRNO(errno.EPERM)
        for name in ("fork", "vfork", "execve", "execveat", "connect", "bind", "listen", "ptrace"):
            f.add_rule(deny, name)
        # Threads (CLONE_THREAD) stay allowed; clone3 hides its flags, so glibc is told to fall back to clone.
        f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        me = os.getpid()
        f.add_rule(deny, "kill", sc.Arg(0, sc.NE, me))
        f.add_rule(deny, "tgkill", sc.Arg(0, sc.NE, me))
        f.load()
    except Exception as err:  # libseccomp missing or the kernel refuses: the other layers remain
        return f"unavailable ({type(err).__name__})"
    return "on"


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
    for ev in ("os.kill", "os.killpg", "signal.pthread_kill"):
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
    line = None
    for frame in traceback.extract_tb(tb):
        if frame.filename == CODE_NAME:
            line = frame.lineno
    return line


def _user_traceback(err: BaseException) -> str:
    """The traceback restricted to the user's own frames (the bootstrap's frames are noise)."""
    te = traceback.TracebackException.from_exception(err)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename == CODE_NAME])
    return "".join(te.format())


def run_user_code(code: str, report: dict) -> int:
    """Compile and run the code as ``__main__``; fills ``report`` and returns the exit status."""
    linecache.cache[CODE_NAME] = (len(code), None, code.splitlines(True), CODE_NAME)
    try:
        compiled = compile(code, CODE_NAME, "exec", dont_inherit=True)
    except SyntaxError as err:
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


def main() -> None:
    job_path, report_fd = sys.argv[1], int(sys.argv[2])
    with open(job_path, encoding="utf-8") as fh:
        job = json.load(fh)
    os.unlink(job_path)
    report_file = os.fdopen(report_fd, "w", encoding="utf-8")
    scratch = job["scratch"]
    os.chdir(scratch)
    libc = _libc()
    layers = {"namespaces": isolate_namespaces(libc) if job.get("namespaces", True) else "off"}
    set_limits(job)
    layers["landlock"] = landlock_fs(libc, scratch) if job.get("landlock", True) else "off"
    layers["seccomp"] = seccomp_filter() if job.get("seccomp", True) else "off"
    # Everything the user's program sees: scratch as cwd, home, temp dir and first import path.
    os.environ["HOME"] = os.environ["TMPDIR"] = scratch
    import tempfile

    tempfile.tempdir = scratch
    sys.path.insert(0, scratch)
    sys.argv = ["main.py"]
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(errors="backslashreplace")
    if job.get("audit_hook", True):
        sys.addaudithook(make_audit_hook(scratch))
        layers["audit_hook"] = "on"
    else:
        layers["audit_hook"] = "off"
    report: dict = {"layers": layers}
    status = run_user_code(job["code"], report)
    if _violations and report["status"] != "violation":
        first = _violations[0]
        report["caught_violation"] = {"kind": first.kind, "message": first.message}
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # a closed or broken stream must not hide the report
        pass
    try:
        report_file.write(json.dumps(report) + "\n")
        report_file.flush()
    except Exception:
        pass
    os._exit(status & 0xFF if isinstance(status, int) else 1)


if __name__ == "__main__":
    main()
