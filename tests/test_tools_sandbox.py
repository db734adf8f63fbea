"""The Python sandbox and the python_code tool: every refusal is clear and the calling process is unharmed.

Each test runs real child processes. Besides the default (all layers), some tests switch the Python
audit hook off to show the kernel layers (namespaces, Landlock, seccomp) refuse the same things alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from atlas_router.config import ToolSpec
from atlas_router.errors import ConfigError
from atlas_router.tools.python_code import PythonCodeTool, extract_code
from atlas_router.tools.registry import build_tool
from atlas_router.tools import sandbox_forkserver
from atlas_router.tools.sandbox import SandboxLimits, run_python

FAST = SandboxLimits(timeout_s=2)
KERNEL_ONLY = SandboxLimits(timeout_s=2, audit_hook=False)


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended while we listed them has no children left to count
        found.update(int(child) for child in text)
    return found


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """A sandbox must leave no process behind: none of this test process (except the one warm fork
    server) and none under the fork server."""
    before = _children(os.getpid())
    yield
    server = sandbox_forkserver._server
    server_pid = {server.proc.pid} if server is not None and server.proc.poll() is None else set()
    assert _children(os.getpid()) - before - server_pid == set()
    for pid in server_pid:
        deadline = time.monotonic() + 2  # the server reaps asynchronously
        while _children(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _children(pid) == set()


def test_success_returns_stdout_and_all_layers_are_active_here():
    r = run_python("import math\nprint(math.factorial(10))\nprint('done')")
    assert r.ok and r.error is None
    assert r.stdout == "3628800\ndone\n"
    # this machine (and CI, the same kind) supports every layer; a regression in one must show up here
    assert r.layers == {"cgroup": r.layers["cgroup"], "namespaces": "pid+mount+net+ipc+uts",
                        "filesystem": "private read-only root, own /proc", "disk_quota": "64 MB tmpfs",
                        "uid": r.layers["uid"], "landlock": r.layers["landlock"],
                        "seccomp": "allow-list", "audit_hook": "on"}
    assert re.fullmatch(r"memory v[12] 512 MB", r.layers["cgroup"])
    assert re.fullmatch(r"abi([6-9]|\d\d) fs\+net\+signal\+abstract-unix scopes", r.layers["landlock"])
    assert int(r.layers["uid"]) >= 2_000_000  # the host runs as root: the child has a uid of its own


def test_exception_reports_type_message_and_user_line():
    r = run_python("a = [1, 2]\n\ndef f(i):\n    return a[i]\n\nprint(f(5))\n")
    assert not r.ok and r.error_kind == "exception"
    assert r.error == "IndexError: list index out of range (line 4)"
    assert r.error_line == 4
    assert 'File "<code>", line 6' in r.stderr and "sandbox_bootstrap" not in r.stderr


def test_syntax_error_has_a_line():
    r = run_python("x = 1\ny = = 2\n")
    assert r.error_kind == "exception" and r.error.startswith("SyntaxError") and r.error_line == 2


def test_network_connect_is_refused_with_a_clear_error():
    r = run_python("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)", FAST)
    assert r.error_kind == "network" and r.error == "network access is blocked in the sandbox"
    assert r.error_line == 2


def test_network_is_unreachable_by_the_kernel_alone():
    code = "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=3)"
    r = run_python(code, SandboxLimits(timeout_s=2, audit_hook=False, seccomp=False, landlock=False))  # netns only
    # "refused" would mean the host's loopback was reached; the empty namespace has no route at all
    assert not r.ok and r.error_kind == "exception" and "Network is unreachable" in r.error


@pytest.mark.parametrize("target", ["/etc/atlas-sandbox-test", "/tmp/outside-{id}"])
@pytest.mark.parametrize("limits", [FAST, KERNEL_ONLY], ids=["all-layers", "kernel-only"])
def test_writes_outside_scratch_are_refused(target, limits):
    path = target.format(id=uuid.uuid4().hex)
    r = run_python(f"open({path!r}, 'w').write('x')", limits)
    assert not r.ok
    if limits.audit_hook:
        assert r.error == f"write outside the scratch directory is blocked: {path}"
    else:
        # the private root is read-only (EROFS); where it exists, Landlock refuses too (EACCES)
        assert r.error.startswith(("PermissionError", "OSError: [Errno 30] Read-only file system"))
    assert not os.path.exists(path)


def test_removing_files_outside_scratch_is_refused(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    for limits in (FAST, KERNEL_ONLY):
        r = run_python(f"import os\nos.remove({str(victim)!r})", limits)
        assert not r.ok
    assert victim.read_text() == "precious"


def test_secrets_outside_the_python_and_system_folders_cannot_be_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    for path in (f"/proc/{os.getpid()}/environ", str(secret)):  # the parent's environment holds API keys
        r = run_python(f"print(open({path!r}).read())", FAST)
        # not there at all in the private root and PID namespace (Landlock would refuse it too)
        assert not r.ok and r.error.startswith(("PermissionError", "FileNotFoundError")) and "token" not in r.stdout
    r = run_python("import numpy, sympy, zoneinfo\nprint(numpy.arange(4).sum(), sympy.isprime(97), "
                   "zoneinfo.ZoneInfo('Europe/Paris'))", SandboxLimits(timeout_s=20))
    assert r.ok, r.error
    assert r.stdout.split() == ["6", "True", "Europe/Paris"]


def test_scratch_is_writable_cwd_and_deleted_afterwards():
    r = run_python("import os\nopen('note.txt', 'w').write('hi')\nprint(os.getcwd())\nprint(open('note.txt').read())")
    assert r.ok, r.error
    cwd, content = r.stdout.split()
    assert content == "hi" and "atlas-sandbox-" in cwd
    assert not os.path.exists(cwd)


def test_infinite_loop_stops_at_the_time_limit():
    start = time.monotonic()
    r = run_python("while True:\n    pass", SandboxLimits(timeout_s=1))
    assert r.error_kind == "timeout" and r.error == "time limit 1s exceeded"
    assert time.monotonic() - start < 4


def test_sleeping_stops_at_the_wall_time_limit():
    r = run_python("import time\nprint('started', flush=True)\ntime.sleep(60)", SandboxLimits(timeout_s=1))
    assert r.error_kind == "timeout" and r.stdout == "started\n"


@pytest.mark.parametrize("code", ["import os\nwhile True:\n    os.fork()",
                                  "import subprocess\nsubprocess.run(['true'])",
                                  "import os\nos.system('true')"])
def test_process_creation_is_refused(code):
    r = run_python(code, FAST)
    assert r.error_kind == "process" and r.error == "process creation is blocked"


def test_fork_bomb_is_refused_by_the_kernel_alone():
    r = run_python("import os\nwhile True:\n    os.fork()", KERNEL_ONLY)
    assert r.error_kind == "exception" and r.error.startswith("PermissionError") and r.error_line == 3
    assert r.duration_s < 2


def test_native_code_via_ctypes_is_refused():
    code = "import ctypes\nctypes.CDLL('libc.so.6').system(b'true')"
    r = run_python(code, FAST)
    assert r.error_kind == "native" and "ctypes" in r.error
    # without the hook, libc's fork+exec still fails in the kernel: system() reports failure (127 << 8)
    r = run_python("import ctypes\nprint(ctypes.CDLL('libc.so.6').system(b'true'))", KERNEL_ONLY)
    assert r.ok and r.stdout.strip() != "0"


def test_signalling_other_processes_is_refused():
    r = run_python(f"import os, signal\nos.kill({os.getpid()}, signal.SIGTERM)", FAST)
    assert r.error_kind == "signal"
    r = run_python(f"import os, signal\nos.kill({os.getpid()}, signal.SIGTERM)", KERNEL_ONLY)
    assert r.error_kind == "exception" and "Operation not permitted" in r.error


def test_allocating_4gb_is_refused():
    r = run_python("x = bytearray(4 * 1024 ** 3)\nprint(len(x))", FAST)
    assert r.error_kind == "memory" and r.error == "memory limit 512 MB exceeded (MemoryError)"
    assert r.error_line == 1


def test_printing_gigabytes_is_stopped_quickly():
    start = time.monotonic()
    r = run_python("while True:\n    print('x' * 10 ** 6)", SandboxLimits(timeout_s=10))
    assert r.error_kind == "output" and r.error == "output limit exceeded (65536 bytes)"
    assert len(r.stdout) <= 65536
    assert time.monotonic() - start < 3  # the output cap, not the 10 s time limit, stopped it


def test_file_size_limit():
    r = run_python("open('big.bin', 'wb').write(b'x' * (3 * 1024 * 1024))", SandboxLimits(timeout_s=5, file_mb=1))
    assert r.error_kind == "file_size" and r.error == "file size limit 1 MB exceeded"


def test_stdin_and_files_reach_the_program():
    code = "import helper\nprint(helper.double(int(input())))\nprint(open('data/in.txt').read())"
    r = run_python(code, FAST, stdin="21\n", files={"helper.py": "def double(x):\n    return 2 * x\n",
                                                     "data/in.txt": "payload"})
    assert r.ok, r.error
    assert r.stdout == "42\npayload\n"
    with pytest.raises(ValueError):
        run_python("pass", FAST, files={"../escape.py": ""})


def test_environment_is_cleared():
    os.environ["ATLAS_SECRET_FOR_TEST"] = "s3cret"
    try:
        r = run_python("import os\nprint(sorted(os.environ))")
    finally:
        del os.environ["ATLAS_SECRET_FOR_TEST"]
    assert "ATLAS_SECRET_FOR_TEST" not in r.stdout and "PATH" in r.stdout


def test_bad_limits_are_rejected():
    with pytest.raises(ValueError):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError):
        SandboxLimits(memory_mb=10)
    with pytest.raises(ValueError, match="disk_mb"):
        SandboxLimits(disk_mb=0)
    with pytest.raises(ValueError, match="require_all_layers must be true or false"):
        SandboxLimits(require_all_layers="no")


# --- the tool -------------------------------------------------------------------------------------

def test_extract_code_prefers_the_last_python_block():
    text = "Let me compute.\n```python\nprint(1)\n```\nand then\n```py\nprint(2)\n```\nDone."
    assert extract_code(text) == "print(2)"
    assert extract_code("```\nprint(3)\n```") == "print(3)"
    assert extract_code("```python\nprint(4)\n") == "print(4)"  # stopped before the closing fence
    assert extract_code("no code here") is None


async def test_tool_runs_code_and_reports_errors():
    tool = build_tool(ToolSpec(name="py", kind="python_code", settings={"timeout_s": 2}))
    assert isinstance(tool, PythonCodeTool) and tool.mode == "loop"
    assert "```python" in tool.usage()
    ok = await tool.run(tool.extract_call("```python\nprint(sum(range(101)))\n```"))
    assert ok.ok and ok.output == "5050\n"
    bad = await tool.run("x = 1\nraise ValueError('bad x')")
    assert not bad.ok and bad.error == "ValueError: bad x (line 2)" and bad.data["error_line"] == 2
    observation = tool.format_observation(bad)
    assert "ValueError: bad x (line 2)" in observation and 'line 2' in observation
    sample = await tool.run(tool.sample_input)
    assert sample.ok and sample.output.split()[0] == "2432902008176640000"


def test_tool_rejects_bad_settings():
    with pytest.raises(ConfigError, match="memory_mb"):
        build_tool(ToolSpec(name="py", kind="python_code", settings={"memory_mb": "lots"}))
    tool = build_tool(ToolSpec(name="py", kind="python_code", settings={"disk_mb": 8, "require_all_layers": True}))
    assert tool.limits.disk_mb == 8 and tool.limits.require_all_layers



def test_exit_statuses():
    assert run_python("import sys\nprint('x')\nsys.exit(0)", FAST).ok
    assert run_python("import os\nprint('y', flush=True)\nos._exit(0)", FAST).ok
    r = run_python("import sys\nsys.exit('bad input')", FAST)
    assert r.error_kind == "exit" and r.error == "exited with status 1: bad input"
    r = run_python("import os\nos._exit(4)", FAST)
    assert not r.ok and r.exit_code == 4


# --- when the kernel refuses a layer ----------------------------------------------------------------

_WITHOUT_NAMESPACES = r'''
import errno, json, logging, os, subprocess, sys
import pyseccomp as sc
f = sc.SyscallFilter(defaction=sc.ALLOW)
f.add_rule(sc.ERRNO(errno.EPERM), "unshare")  # a kernel (or container) that refuses namespaces
f.load()
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from atlas_router.tools import sandbox_forkserver
from atlas_router.tools.sandbox import SandboxLimits, run_python
canary = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
secret = sys.argv[1]
probe = (f"import os\nprint('ran', os.getpid() != 1)\n"
         f"for attempt in (lambda: os.kill({canary.pid}, 9), lambda: open({secret!r}).read()):\n"
         f"    try:\n        print('ESCAPED', attempt())\n    except OSError as e:\n        print('refused', e.errno)\n")
degraded = run_python(probe, SandboxLimits(timeout_s=5, audit_hook=False))
strict = run_python("print('ran')", SandboxLimits(timeout_s=5, require_all_layers=True))
alive = canary.poll() is None
canary.kill()
print(json.dumps({"degraded": degraded.to_dict(), "strict": strict.to_dict(), "canary_alive": alive}))
'''


def test_a_refused_layer_is_reported_loudly_and_can_be_required(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    out = subprocess.run([sys.executable, "-c", _WITHOUT_NAMESPACES, str(secret)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.splitlines()[-1])
    degraded, strict = data["degraded"], data["strict"]
    # the run goes on without the namespaces, says so in the result and in a warning...
    assert degraded["ok"] and degraded["layers"]["namespaces"].startswith("unavailable")
    assert degraded["layers"]["uid"].startswith("unavailable") and degraded["layers"]["disk_quota"].startswith("unavailable")
    assert "sandbox runs WITHOUT these kernel layers" in out.stderr and "namespaces" in out.stderr
    # ...and the remaining kernel layers still refuse a signal to a host process and reading a secret
    assert degraded["stdout"].splitlines() == ["ran True", "refused 1", "refused 13"]
    assert data["canary_alive"]
    # with every layer required, the code never runs
    assert not strict["ok"] and strict["error_kind"] == "sandbox" and strict["stdout"] == ""
    assert "namespaces" in strict["error"]


def test_require_all_layers_from_the_environment(monkeypatch):
    monkeypatch.setenv("ATLAS_SANDBOX_REQUIRE_ALL_LAYERS", "1")
    limits = SandboxLimits(timeout_s=5)
    assert limits.require_all_layers
    assert run_python("print('ran')", limits).ok  # this machine grants every layer
    r = run_python("print('ran')", SandboxLimits(timeout_s=5, landlock=False))  # a layer switched off
    assert r.error_kind == "sandbox" and "landlock" in r.error and r.stdout == ""


def test_disk_quota_and_memory_peak_are_reported():
    r = run_python("open('a.bin', 'wb').write(b'x' * (6 << 20))", SandboxLimits(timeout_s=5, disk_mb=4, file_mb=16))
    assert r.error_kind == "exception" and "No space left on device" in r.error
    assert r.memory_peak_mb is not None and 0 < r.memory_peak_mb <= 512


def test_the_package_and_project_tree_are_not_importable_but_numpy_is():
    r = run_python("import sys\ntry:\n    import atlas_router\nexcept ImportError as e:\n    print('no', type(e).__name__)\n"
                   "print([p for p in sys.path if p.endswith('/src')])\nimport numpy\nprint(numpy.ones(3).sum())",
                   SandboxLimits(timeout_s=20))
    assert r.ok, r.error
    assert r.stdout.split("\n")[:3] == ["no ModuleNotFoundError", "[]", "3.0"]


# --- the fork server --------------------------------------------------------------------------------

def test_concurrent_runs_each_get_their_own_sandbox():
    from concurrent.futures import ThreadPoolExecutor

    code = "import os, time\ntime.sleep(0.3)\nprint(os.getpid(), os.getuid(), os.getcwd())"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: run_python(code, SandboxLimits(timeout_s=20)), range(8)))
    assert all(r.ok for r in results), [r.error for r in results]
    seen = [r.stdout.split() for r in results]
    assert {pid for pid, _, _ in seen} == {"1"}  # each is PID 1 of its own namespace
    assert len({uid for _, uid, _ in seen}) == 8 and len({cwd for _, _, cwd in seen}) == 8


def test_a_dead_fork_server_fails_its_runs_and_is_replaced():
    assert run_python("print(1)", FAST).ok
    server = sandbox_forkserver._server
    assert server is not None
    import threading

    def kill_once_the_run_exists() -> None:
        deadline = time.monotonic() + 10
        while not _children(server.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        server.proc.kill()

    killer = threading.Thread(target=kill_once_the_run_exists)
    killer.start()
    r = run_python("import time\ntime.sleep(30)", SandboxLimits(timeout_s=20))
    killer.join()
    assert not r.ok
    # failed when the server died ("crash"), not at the 20 s time limit ("timeout")
    assert r.error_kind == "crash" and r.error == "the sandbox fork server died during the run"
    again = run_python("print(2)", FAST)
    assert again.ok and again.stdout == "2\n" and sandbox_forkserver._server is not server
    server.proc.wait()


def test_everyday_libraries_work_under_the_allow_list():
    """The seccomp allow-list and the read-only root must not break what model code ordinarily does."""
    code = ("import asyncio, sqlite3, tempfile, os\nfrom concurrent.futures import ThreadPoolExecutor\n"
            "import numpy as np, pandas as pd, scipy.optimize as opt\n"
            "async def f():\n    await asyncio.sleep(0.01)\n    return 3\n"
            "with ThreadPoolExecutor(4) as pool:\n    squares = sum(pool.map(lambda x: x * x, range(10)))\n"
            "fd, path = tempfile.mkstemp()\ndb = sqlite3.connect(path)\ndb.execute('create table t(x)')\n"
            "db.execute('insert into t values (7)')\n"
            "print(asyncio.run(f()), squares, db.execute('select x from t').fetchone()[0], os.cpu_count() > 0,\n"
            "      round(float(np.linalg.det(np.eye(3) * 2))), int(pd.Series([1, 2]).sum()),\n"
            "      round(float(opt.minimize_scalar(lambda x: (x - 2) ** 2).x)))")
    r = run_python(code, SandboxLimits(timeout_s=30))
    assert r.ok, (r.error, r.stderr[-500:])
    assert r.stdout.split() == ["3", "285", "7", "True", "8", "3", "2"]
