"""The real SmolLM2 judge behind a loopback model server, on a small sample of RouteLLM's GSM8K replies
(correctness known): ``atlas judge-agreement`` reports its agreement with the gold labels, and routers
fitted on its grades vs the gold grades, evaluated on the same gold test split. A 135M judge is weak; the
test checks that what is reported is what the grades say, not that the judge is good."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from atlas_router.eval.judge_agreement import sample_queries
from atlas_router.records.importers.routellm import read_routellm
from atlas_router.eval.split import split_records
from atlas_router.records.store import RecordStore
from atlas_router.serve.model_server import create_model_app
from support.servers import running_server

N_QUERIES = 6


@pytest.fixture(scope="module")
def judge_server(local_pool):
    with running_server(create_model_app(local_pool)) as url:
        yield url


def test_judge_agreement_on_gsm8k_sample(tmp_path, shared_data, judge_server):
    records = read_routellm([shared_data / "routing" / "routellm" / "gsm8k_responses.csv"]).records
    gold_dir = tmp_path / "gold"
    RecordStore(gold_dir).append(sample_queries(records, N_QUERIES, seed=1))
    judged_dir = tmp_path / "judged"
    grader = f"judge-verdict:smollm2-135m@{judge_server}/v1"
    done = subprocess.run(
        [sys.executable, "-m", "atlas_router", "judge-agreement", "--records", str(gold_dir), "--grader", grader,
         "--limit", "0", "--routers", "best-single,atlas-cluster", "--encoder", "hashing", "--out", str(judged_dir),
         "--json"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["grader"] == grader and report["queries"] == N_QUERIES

    gold = RecordStore(gold_dir).load()
    judged = RecordStore(judged_dir).load()
    assert len(judged) == 2 * N_QUERIES and set(judged["grader"]) == {grader}
    assert set(gold["grader"]) == {""}  # imported records: grader unknown, and left alone
    merged = gold.merge(judged, on=["query_id", "model", "tool"], suffixes=("_gold", "_judge"))
    covered = merged[merged["score_judge"].notna()]
    labels = report["labels"]
    assert labels["n"] == 2 * N_QUERIES and labels["covered"] == len(covered)
    assert labels["coverage"] == pytest.approx(len(covered) / (2 * N_QUERIES))
    assert set(covered["score_judge"]) <= {0.0, 1.0}  # a yes/no verdict
    if len(covered):
        agree = ((covered["score_gold"] >= 0.5) == (covered["score_judge"] >= 0.5)).mean()
        assert labels["accuracy"] == pytest.approx(agree)
        assert labels["judge_positive_rate"] == pytest.approx((covered["score_judge"] >= 0.5).mean())

    routing = report["routing"]
    train, test = split_records(gold, test_size=0.3, seed=0)
    assert routing["test_queries"] == test["query_id"].nunique()
    per_pair_test = test.groupby("model")["score"].mean()
    best_on_train = train.groupby("model")["score"].mean().idxmax()
    best = routing["routers"]["best-single"]
    # gold-fitted best-single: the best pair on gold train grades, scored on gold test grades
    assert best["gold"]["accuracy"] == pytest.approx(per_pair_test[best_on_train])
    # judge-fitted best-single: some single pair, scored on the same gold test grades
    assert any(np.isclose(best["judge"]["accuracy"], v) for v in per_pair_test.values)
    assert set(routing["routers"]["atlas-cluster"]) == {"gold", "judge"}
