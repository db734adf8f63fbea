"""One meaning per command-line word (docs/cli.md): ``--json`` is a flag everywhere, a JSON file is
``--json-out PATH``, a router file is ``--router-file PATH``, ``--policy DIR`` alone makes ``ask`` route with
a policy; the old spellings still work and print one notice line on standard error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import typer.main

from atlas_router.cli import app
from atlas_router.cli.words import JSON_OUT_COMMANDS, rewrite_old_words
from atlas_router.records.store import RecordStore
from support.routing_data import synthetic_records

JSON_NOTICE = "notice: '--json PATH' is now '--json-out PATH'"
ROUTER_NOTICE = "notice: '--router PATH' is now '--router-file PATH'"
RL_NOTICE = "notice: '--router rl --policy DIR' is now '--policy DIR'"


def atlas(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atlas_router", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def notices(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("notice:")]


def commands():
    """(path, click command) of every ``atlas`` command, sub-commands of groups included."""
    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    return list(walk(typer.main.get_command(app), []))


def option(cmd, word: str):
    found = [p for p in cmd.params if word in getattr(p, "opts", [])]
    return found[0] if found else None


# -- the declared words ---------------------------------------------------------------------------------


def test_json_is_a_flag_in_every_command_and_json_out_a_path():
    with_json = {name for name, cmd in commands() if option(cmd, "--json") is not None}
    # every command that prints a result has the flag, the four report writers included
    assert {"ask", "route", "fit", "eval", "calibrate", "sweep", "train-rl", "collect", "tool", "pool check",
            "records show", "judge-agreement"} <= with_json
    for name, cmd in commands():
        flag = option(cmd, "--json")
        if flag is not None:
            assert flag.is_flag and not flag.multiple, f"{name}: --json takes a value"
        out = option(cmd, "--json-out")
        assert (out is not None) == (name in JSON_OUT_COMMANDS), name
        if out is not None:
            assert not out.is_flag and flag is not None, name


def test_router_never_names_a_file():
    for name, cmd in commands():
        router = option(cmd, "--router")
        if router is not None:  # only ask's old mode option (file|rl|pair), hidden from --help
            assert name == "ask" and router.hidden, name
        for p in cmd.params:  # the words with "router" in them: a file, kinds, the output of calibrate
            for word in (w for w in getattr(p, "opts", []) if w.startswith("--") and "router" in w and not getattr(p, "is_flag", False)):
                assert word in ("--router-file", "--routers", "--save-router", "--router"), f"{name}: {word}"
                if word == "--routers":  # router kinds by name, never a file
                    assert "file" not in (p.help or "").lower(), f"{name}: {p.help}"
    files = {name for name, cmd in commands() if option(cmd, "--router-file") is not None}
    assert files == {"ask", "route", "serve"}
    assert option(dict(commands())["serve"], "--router-file").multiple  # serve takes several


# -- the rewriting of old spellings ---------------------------------------------------------------------


def rewrite(command, *args):
    said: list[str] = []
    return rewrite_old_words(command, list(args), say=said.append), said


def test_rewrite_old_json_paths_only_where_json_took_one():
    out, said = rewrite("eval", "--train", "t", "--json", "e.json")
    assert out == ["--train", "t", "--json-out", "e.json"] and len(said) == 1 and said[0].startswith(JSON_NOTICE)
    out, said = rewrite("eval", "--json", "-", "--report", "r")
    assert out == ["--json-out", "-", "--report", "r"] and len(said) == 1 and said[0].startswith(JSON_NOTICE)
    out, said = rewrite("sweep", "--json=s.json")
    assert out == ["--json-out=s.json"] and len(said) == 1 and said[0].startswith(JSON_NOTICE)
    for command in ("eval", "calibrate", "sweep", "train-rl"):
        assert rewrite(command, "--json", "--report", "r") == (["--json", "--report", "r"], [])  # the flag
        assert rewrite(command, "--k", "3", "--json") == (["--k", "3", "--json"], [])
    # where --json was always a flag, a question or a value after it is left alone
    assert rewrite("ask", "--json", "What is 2+2?") == (["--json", "What is 2+2?"], [])
    assert rewrite("route", "--json", "-") == (["--json", "-"], [])
    assert rewrite("eval", "--", "--json", "x") == (["--", "--json", "x"], [])


def test_rewrite_old_router_files():
    out, said = rewrite("serve", "--router", "a.joblib", "--router=b.atlas", "--port", "1")
    assert out == ["--router-file", "a.joblib", "--router-file", "b.atlas", "--port", "1"]
    assert len(said) == 1 and said[0].startswith(ROUTER_NOTICE)  # once, however often repeated
    assert rewrite("route", "--router", "anything", "q")[0] == ["--router-file", "anything", "q"]
    # ask: --router was a mode; only a value that is a router file moves to --router-file
    assert rewrite("ask", "--router", "rl", "--policy", "p", "q") == (["--router", "rl", "--policy", "p", "q"], [])
    assert rewrite("ask", "--router", "mine.atlas", "q")[0] == ["--router-file", "mine.atlas", "q"]
    assert rewrite("fit", "--router", "x.atlas") == (["--router", "x.atlas"], [])


# -- the commands, run -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli-words")
    RecordStore(base / "records").append(synthetic_records(n_per_topic=30, seed=5))
    env = {**os.environ, "ATLAS_EMBED_CACHE_DIR": str(base / "embed-cache")}
    fit = atlas("fit", "cluster", "--records", base / "records", "--out", base / "r.atlas", "--k", "3",
                "--encoder", "hashing:128", env=env)
    assert fit.returncode == 0, fit.stderr[-2000:]
    return base, env


def test_route_router_file_and_old_router(work):
    base, env = work
    new = atlas("route", "--router-file", base / "r.atlas", "--json", "What is 12 plus 30?", env=env)
    old = atlas("route", "--router", base / "r.atlas", "--json", "What is 12 plus 30?", env=env)
    assert new.returncode == 0 == old.returncode, new.stderr + old.stderr
    assert json.loads(new.stdout) == json.loads(old.stdout) and json.loads(new.stdout)["model"]
    assert notices(new) == [] and len(notices(old)) == 1 and notices(old)[0].startswith(ROUTER_NOTICE)


def test_eval_json_flag_json_out_and_old_json_path(work, tmp_path):
    base, env = work
    args = ["eval", "--train", base / "records", "--routers", "best-single,oracle", "--test-size", "0.3"]

    def scores(d):  # (NaN-free) what each router scored
        return {name: (r["accuracy"], r["cost"], r["n"]) for name, r in d["routers"].items()}

    flag = atlas(*args, "--json", env=env)
    assert flag.returncode == 0, flag.stderr[-2000:]
    data = json.loads(flag.stdout)  # JSON alone on stdout ...
    assert set(data["routers"]) == {"best-single", "oracle"}
    assert "all benchmarks" in flag.stderr and notices(flag) == []  # ... the tables on stderr

    new = atlas(*args, "--json-out", tmp_path / "new.json", env=env)
    assert new.returncode == 0 and "all benchmarks" in new.stdout and notices(new) == []
    assert scores(json.loads((tmp_path / "new.json").read_text())) == scores(data)

    old = atlas(*args, "--json", tmp_path / "old.json", env=env)
    assert old.returncode == 0 and "all benchmarks" in old.stdout
    assert scores(json.loads((tmp_path / "old.json").read_text())) == scores(data)
    assert len(notices(old)) == 1 and notices(old)[0].startswith(JSON_NOTICE)

    dash = atlas(*args, "--json", "-", env=env)
    assert dash.returncode == 0 and scores(json.loads(dash.stdout)) == scores(data)
    assert len(notices(dash)) == 1


def test_calibrate_and_sweep_json_words(work, tmp_path):
    base, env = work
    cal = ["calibrate", "--records", base / "records", "--max-cost", "1", "--k", "3", "--encoder", "hashing:128"]
    flag = atlas(*cal, "--json", env=env)
    assert flag.returncode == 0, flag.stderr[-2000:]
    report = json.loads(flag.stdout)
    assert report["target"]["kind"] == "max_cost" and "target:" in flag.stderr and notices(flag) == []
    old = atlas(*cal, "--json", tmp_path / "cal.json", env=env)
    assert old.returncode == 0 and "target:" in old.stdout and len(notices(old)) == 1
    assert json.loads((tmp_path / "cal.json").read_text())["alpha"] == report["alpha"]
    assert (tmp_path / "cal.json.manifest.json").is_file()

    sw = ["sweep", "--records", base / "records", "--k", "2", "--encoders", "hashing:64"]
    flag = atlas(*sw, "--json", env=env)
    assert flag.returncode == 0, flag.stderr[-2000:]
    rows = json.loads(flag.stdout)["rows"]
    assert [r["k"] for r in rows] == [2] and "silhouette" in flag.stderr
    new = atlas(*sw, "--json-out", tmp_path / "sw.json", env=env)
    assert new.returncode == 0 and "silhouette" in new.stdout and notices(new) == []
    assert json.loads((tmp_path / "sw.json").read_text())["rows"][0]["k"] == 2
    assert (tmp_path / "sw.json.manifest.json").is_file()


def test_train_rl_accepts_both_spellings():
    # neither a config nor a preset: the options parse (old and new), then the command says what is missing
    for args, n in ((["--json-out", "r.json"], 0), (["--json"], 0), (["--json", "r.json"], 1)):
        proc = atlas("train-rl", *args)
        assert proc.returncode == 2 and "give exactly one of --config FILE or --preset NAME" in proc.stderr
        assert len(notices(proc)) == n, proc.stderr


def test_serve_router_file_and_old_router(tmp_path):
    new = atlas("serve", "--router-file", tmp_path / "nope.joblib", "--router-file", tmp_path / "two.atlas")
    old = atlas("serve", "--router", tmp_path / "nope.joblib", "--router", tmp_path / "two.atlas")
    for proc in (new, old):
        assert proc.returncode == 2 and "router file not found" in proc.stderr and "nope.joblib" in proc.stderr
    assert notices(new) == [] and len(notices(old)) == 1 and notices(old)[0].startswith(ROUTER_NOTICE)


def test_ask_policy_alone_selects_the_policy(work, tmp_path):
    base, env = work
    missing = tmp_path / "no-policy"
    new = atlas("ask", "--policy", missing, "What is 2+2?", env=env)
    old = atlas("ask", "--router", "rl", "--policy", missing, "What is 2+2?", env=env)
    for proc in (new, old):  # both reach the policy loader (which refuses a directory without a policy)
        assert proc.returncode == 2 and "not an RL policy directory" in proc.stderr, proc.stderr
    assert notices(new) == [] and len(notices(old)) == 1 and notices(old)[0].startswith(RL_NOTICE)

    alone = atlas("ask", "--router", "rl", "What is 2+2?", env=env)
    assert alone.returncode == 2 and "--router rl needs --policy DIR" in alone.stderr
    both = atlas("ask", "--policy", missing, "--model", "smollm2-135m", "What is 2+2?", env=env)
    assert both.returncode == 2 and "leave out --model" in both.stderr
    bad = atlas("ask", "--router", "knn", "What is 2+2?", env=env)
    assert bad.returncode == 2 and "a router file is --router-file PATH" in bad.stderr

    # a router file given to ask with the old word goes where --router-file goes (this one's pairs are
    # not in the embedded pool: the same one-line refusal either way)
    by_file = atlas("ask", "--router-file", base / "r.atlas", "What is 2+2?", env=env)
    by_old = atlas("ask", "--router", base / "r.atlas", "What is 2+2?", env=env)
    for proc in (by_file, by_old):
        assert proc.returncode == 2 and "the router's pairs are not in this pool" in proc.stderr, proc.stderr
    assert notices(by_file) == [] and notices(by_old)[0].startswith(ROUTER_NOTICE)


def test_train_rl_seed_reseeds_the_whole_run(tmp_path, monkeypatch):
    """--seed replaces the run's seed and the policy's initialisation seed; without it the preset's stay."""
    from typer.testing import CliRunner

    import atlas_router.rl.presets as presets
    import atlas_router.rl.report as rl_report

    seen = []

    async def fake_run(cfg, log=None):
        seen.append((cfg.seed, cfg.policy.seed))
        return {}

    monkeypatch.setattr(presets, "run_with_report", fake_run)
    monkeypatch.setattr(rl_report, "format_table", lambda report: "the table")
    for extra in (["--seed", "7"], []):
        result = CliRunner().invoke(app, ["train-rl", "--preset", "cpu-replay-small", "--dir", str(tmp_path / "run"),
                                          "--json-out", str(tmp_path / "r.json"), *extra])
        assert result.exit_code == 0, result.output
    assert seen == [(7, 7), (0, 0)]


def test_train_rl_report_goes_where_the_words_say(tmp_path, monkeypatch):
    """train-rl's report: stdout by default and with --json, a file with --json-out (or the old --json PATH)."""
    from typer.testing import CliRunner

    import atlas_router.rl.presets as presets
    import atlas_router.rl.report as rl_report

    async def fake_run(cfg, log=None):
        return {"after": {"accuracy": 0.5}}

    monkeypatch.setattr(presets, "preset_config", lambda name, out_dir: object())
    monkeypatch.setattr(presets, "run_with_report", fake_run)
    monkeypatch.setattr(rl_report, "format_table", lambda report: "the table")
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, ["train-rl", "--preset", "cpu-replay-small", "--dir", str(tmp_path / "run"), *args])
        assert result.exit_code == 0, result.output
        return result

    for args in ([], ["--json"], ["--json-out", "-"]):
        result = run(*args)
        assert json.loads(result.stdout) == {"after": {"accuracy": 0.5}} and "notice" not in result.stderr, args
    result = run("--json-out", str(tmp_path / "new.json"))
    assert result.stdout == "" and json.loads((tmp_path / "new.json").read_text())["after"]["accuracy"] == 0.5
    result = run("--json", str(tmp_path / "old.json"))
    assert result.stdout == "" and json.loads((tmp_path / "old.json").read_text())["after"]["accuracy"] == 0.5
    assert result.stderr.count(JSON_NOTICE) == 1
    result = run("--json", "--json-out", str(tmp_path / "both.json"))  # the flag and a file: both
    assert json.loads(result.stdout)["after"] and (tmp_path / "both.json").is_file()
