"""``atlas collect --prompts``: unlabelled prompts from JSONL/CSV/records, every pair run against a loopback
upstream, graded by a loopback judge (real HTTP, real subprocesses); SIGKILL and resume give the same
records as a clean run, and a query's rows are only ever written together."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from atlas_router.errors import AtlasError
from atlas_router.records.prompts import read_prompts
from atlas_router.records.store import RecordStore
from support.deterministic_upstream import answer_for, create_deterministic_app
from support.judge_upstream import create_judge_app, is_right
from support.servers import running_server

PROMPTS = [f"A shop sells {i} pens and {i + 3} pencils. Reply with {i * 7 + 1}" for i in range(1, 25)]


@pytest.fixture(scope="module")
def upstream():
    with running_server(create_deterministic_app(delay_s=0.03)) as url:
        yield url


@pytest.fixture(scope="module")
def judge():
    app = create_judge_app(delay_s=0.02)
    with running_server(app) as url:
        yield url, app


def pool_file(tmp_path, url: str):
    p = tmp_path / "pool.yaml"
    p.write_text(
        "models:\n"
        f"  - {{name: good, backend: openai, endpoint: '{url}/v1', price: {{input: 1.0, output: 2.0}}}}\n"
        f"  - {{name: noisy, backend: openai, endpoint: '{url}/v1', price: {{input: 0.1, output: 0.2}}}}\n"
        "tools:\n  - {name: none, kind: none}\n  - {name: calculator, kind: calculator}\n"
        "cache: {enabled: false}\n"
    )
    return p


def write_jsonl(path, prompts):
    path.write_text("".join(json.dumps(row) + "\n" for row in prompts), encoding="utf-8")
    return path


def atlas(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "atlas_router", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def snapshot(out) -> dict:
    df = RecordStore(out).load()
    return {(r.query_id, r.model, r.tool): (r.answer, r.score, r.cost, r.error, r.grader) for r in df.itertuples()}


def test_read_prompts_formats(tmp_path):
    jsonl = write_jsonl(tmp_path / "log.jsonl", [
        {"prompt": "one"}, {"question": "two"}, "three",
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "four"}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "five"}]}]},
        {"prompt": "one"}, {"prompt": "  "},
    ])
    read = read_prompts(jsonl)
    assert [e.question for e in read.examples] == ["one", "two", "three", "four", "five"]
    assert (read.blank, read.repeated) == (1, 1)
    assert [e.question for e in read_prompts(jsonl, limit=2).examples] == ["one", "two"]
    csv_file = tmp_path / "p.csv"
    csv_file.write_text('id,query\n1,"first, with a comma"\n2,"second\nline"\n', encoding="utf-8")
    assert [e.question for e in read_prompts(csv_file).examples] == ["first, with a comma", "second\nline"]
    store_dir = tmp_path / "gateway-records"
    RecordStore(store_dir).append([{"query": "from the gateway", "model": "m"}, {"query": "from the gateway", "model": "n"}])
    assert [e.question for e in read_prompts(store_dir).examples] == ["from the gateway"]


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "ok"}\n{"prompt": \n', "p.jsonl:2: not valid JSON"),
    ('{"answer": "no prompt"}\n', "p.jsonl:1: no prompt field"),
    ('{"prompt": 5}\n', "field 'prompt' must be text"),
])
def test_read_prompts_bad_rows(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(AtlasError, match=message):
        read_prompts(path)


def test_cli_errors_are_one_line(tmp_path, upstream):
    pool = pool_file(tmp_path, upstream)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS[:2]])
    no_grader = atlas("collect", "--pool", pool, "--prompts", prompts, "--out", tmp_path / "o")
    assert no_grader.returncode == 2 and no_grader.stderr.strip() == (
        "error: --prompts have no gold answers: give --grader (for example judge:MODEL)")
    bad = atlas("collect", "--pool", pool, "--prompts", tmp_path / "p.txt", "--grader", "judge:good", "--out", tmp_path / "o")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "prompt file not found" in bad.stderr
    unknown = atlas("collect", "--pool", pool, "--prompts", prompts, "--grader", "judge:nobody", "--out", tmp_path / "o")
    assert unknown.returncode == 2 and "nobody" in unknown.stderr and unknown.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists() or not RecordStore(tmp_path / "o").load().shape[0]


def collect_cmd(pool, out, prompts, grader, *extra):
    return [sys.executable, "-m", "atlas_router", "collect", "--pool", str(pool), "--prompts", str(prompts),
            "--grader", grader, "--out", str(out), "--concurrency", "2", *extra]


def test_collect_prompts_judged_and_resumable(tmp_path, upstream, judge):
    judge_url, judge_app = judge
    pool = pool_file(tmp_path, upstream)
    prompts = write_jsonl(tmp_path / "traffic.jsonl", [{"prompt": p} for p in PROMPTS])
    grader = f"judge:fair@{judge_url}/v1"
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    done = subprocess.run(collect_cmd(pool, clean, prompts, grader, "--json"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["added"] == 96 and summary["grader"] == grader and summary["ungraded_queries"] == 0
    df = RecordStore(clean).load()
    assert len(df) == 96 and set(df["grader"]) == {grader} and set(df["benchmark"]) == {"prompts"}
    assert set(df["reference"]) == {""}  # no gold answer anywhere
    for r in df.itertuples():  # the judge's verdict, mapped to [0, 1], is the score
        right = answer_for(r.model, r.query) == r.query.split()[-1]
        assert r.score == pytest.approx(8 / 9 if right else 1 / 9), (r.model, r.query, r.answer)
    assert df[df["model"] == "good"]["score"].mean() > df[df["model"] == "noisy"]["score"].mean()
    reference = snapshot(clean)

    proc = subprocess.Popen(collect_cmd(pool, killed, prompts, grader), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(killed.glob("part-*.parquet")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.5))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = RecordStore(killed).load()
    assert 0 < len(partial) < 96, f"kill landed outside the run ({len(partial)} rows)"
    assert set(partial.groupby("query_id").size()) == {4}  # a query's rows are written together

    rerun = subprocess.run(collect_cmd(pool, killed, prompts, grader, "--json"), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads(rerun.stdout)["added"] == 96 - len(partial)
    assert snapshot(killed) == reference


def test_collect_prompts_pairwise_and_reference(tmp_path, upstream, judge):
    judge_url, _ = judge
    pool = pool_file(tmp_path, upstream)
    prompts = tmp_path / "p.csv"
    prompts.write_text("prompt\n" + "".join(f'"{p}"\n' for p in PROMPTS[:6]), encoding="utf-8")
    pw = atlas(*collect_cmd(pool, tmp_path / "pw", prompts, f"judge-pairwise:fair@{judge_url}/v1", "--json")[3:])
    assert pw.returncode == 0, pw.stderr[-2000:]
    df = RecordStore(tmp_path / "pw").load()
    for qid, g in df.groupby("query_id"):
        right = {(r.model, r.tool): answer_for(r.model, r.query) == r.query.split()[-1] for r in g.itertuples()}
        n_right = sum(right.values())
        for r in g.itertuples():  # win 1 / tie 0.5 / loss 0 against the 3 other pairs
            mine = right[(r.model, r.tool)]
            expected = ((n_right - 1) * 0.5 + (4 - n_right)) / 3 if mine else ((4 - n_right - 1) * 0.5) / 3
            assert r.score == pytest.approx(expected)

    # first only the none-tool pairs; the calculator pairs come later and are graded against the stored reference
    first = atlas(*collect_cmd(pool, tmp_path / "ref", prompts, "reference:good@@none", "--pairs", "*@@none")[3:])
    assert first.returncode == 0, first.stderr[-2000:]
    grown = atlas(*collect_cmd(pool, tmp_path / "ref", prompts, "reference:good@@none", "--json")[3:])
    assert grown.returncode == 0, grown.stderr[-2000:]
    assert json.loads(grown.stdout)["added"] == 12
    df = RecordStore(tmp_path / "ref").load()
    assert len(df) == 24 and set(df["grader"]) == {"reference:good@@none"}
    for r in df.itertuples():
        assert r.score == float(answer_for(r.model, r.query) == answer_for("good", r.query)), (r.model, r.tool)


def test_judge_failure_writes_nothing_and_rerun_retries(tmp_path, upstream, judge):
    judge_url, _ = judge
    pool = pool_file(tmp_path, upstream)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS[:2]])
    failed = atlas(*collect_cmd(pool, tmp_path / "o", prompts, f"judge:down@{judge_url}/v1", "--json")[3:])
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["ungraded_queries"] == 2 and "rerun to retry" in failed.stderr
    assert len(RecordStore(tmp_path / "o").load()) == 0
    ok = atlas(*collect_cmd(pool, tmp_path / "o", prompts, f"judge:fair@{judge_url}/v1", "--json")[3:])
    assert ok.returncode == 0 and json.loads(ok.stdout)["added"] == 8


def test_benchmark_graded_by_a_judge_keeps_the_gold_reference(tmp_path, upstream, judge, shared_data):
    judge_url, _ = judge
    pool = pool_file(tmp_path, upstream)
    grader = f"judge-verdict:fair@{judge_url}/v1"
    done = atlas("collect", "--pool", pool, "--benchmark", "gsm8k", "--path",
                 shared_data / "benchmarks" / "gsm8k" / "test.jsonl", "--limit", "3", "--pairs", "*@@none",
                 "--grader", grader, "--out", tmp_path / "o", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["grader"] == grader
    df = RecordStore(tmp_path / "o").load()
    assert len(df) == 6 and set(df["grader"]) == {grader} and (df["reference"] != "").all()
    for r in df.itertuples():  # the judge's rule (answer == the question's last number), not the gold answer
        assert r.score == float(is_right(r.query, r.response))
    gold = atlas("collect", "--pool", pool, "--benchmark", "gsm8k", "--path",
                 shared_data / "benchmarks" / "gsm8k" / "test.jsonl", "--limit", "3", "--pairs", "*@@none",
                 "--out", tmp_path / "g", "--json")
    assert gold.returncode == 0 and set(RecordStore(tmp_path / "g").load()["grader"]) == {"gold:gsm8k"}
