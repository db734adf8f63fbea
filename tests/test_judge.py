"""Label-free graders: LLM judges (pointwise, pairwise with position swap) over a real loopback HTTP judge,
the reward-model scorer over a loopback /pooling server, agreement with a reference pair, and the
agreement measures. The scripted judge and /pooling servers stand in for hosted judges and a 7B PRM,
which cannot run here; the real SmolLM2 judge is exercised in test_judge_agreement.py."""

from __future__ import annotations

import asyncio
import math

import pandas as pd
import pytest
from fastapi import FastAPI, Request

from atlas_router.data.graders import LABEL_FREE_GRADERS, build_label_free_grader
from atlas_router.eval.judge_agreement import label_agreement, preference_agreement
from atlas_router.data.graders.judge import PairwiseJudge, parse_rating, parse_verdict, parse_yes_no
from atlas_router.errors import AtlasError
from atlas_router.pool.pool import Pool
from support.judge_upstream import create_judge_app
from support.servers import running_server

Q = "Tom has 3 apples and buys 4 more. How many apples now? Use 7"
RIGHT, WRONG = "3 + 4 = 7. Final answer: 7", "3 + 4 = 8. Final answer: 8"


@pytest.fixture(scope="module")
def judge_url():
    app = create_judge_app()
    with running_server(app) as url:
        yield url, app


def run(coro):
    return asyncio.run(coro)


def test_registered_beside_the_gold_graders():
    assert set(LABEL_FREE_GRADERS) == {"judge", "judge-verdict", "judge-pairwise", "prm", "reference"}


def test_parse_rating_and_verdict():
    assert parse_rating("[[7]]") == 7
    assert parse_rating("The response is fine. Rating: [[10]]") == 10
    assert parse_rating("Rating: 3") == 3
    assert parse_rating(" 8 ") == 8
    assert parse_rating("The answer 12 is given in step 3 of 4.") is None
    assert parse_rating("") is None
    assert parse_verdict("[[B]]") == "B"
    assert parse_verdict("Verdict: [[C]]") == "C"
    assert parse_verdict("A") == "A"
    assert parse_verdict("Assistant B is better because ...") == "B"
    assert parse_verdict("Both are fine") is None
    assert parse_yes_no("Yes.") is True and parse_yes_no("no, it is wrong") is False
    assert parse_yes_no("Incorrect: 8") is False and parse_yes_no("[[yes]]") is True
    assert parse_yes_no("The answer is 18.") is None and parse_yes_no("Nothing") is None


def test_pointwise_judge_scores_and_names_itself(judge_url):
    url, app = judge_url
    grader = build_label_free_grader(f"judge:fair@{url}/v1")
    grades = run(grader.grade(Q, {("m1", "none"): RIGHT, ("m2", "none"): WRONG, ("m3", "none"): "unsure, 7?",
                                  ("m4", "none"): ""}))
    assert grades[("m1", "none")].score == pytest.approx(8 / 9)  # [[9]] -> (9-1)/9
    assert grades[("m2", "none")].score == pytest.approx(1 / 9)
    assert math.isnan(grades[("m3", "none")].score)  # no verdict: not graded
    assert grades[("m4", "none")].score == 0.0  # an empty reply is never sent to the judge
    assert {g.grader for g in grades.values()} == {f"judge:fair@{url}/v1"}


def test_verdict_judge(judge_url):
    url, _ = judge_url
    grader = build_label_free_grader(f"judge-verdict:fair@{url}/v1")
    grades = run(grader.grade(Q, {("m1", "none"): RIGHT, ("m2", "none"): WRONG, ("m3", "none"): "unsure, 7?"}))
    assert [grades[(m, "none")].score for m in ("m1", "m2")] == [1.0, 0.0]
    assert math.isnan(grades[("m3", "none")].score)
    assert grades[("m1", "none")].grader == f"judge-verdict:fair@{url}/v1"


def test_pairwise_judge_swaps_positions(judge_url):
    url, app = judge_url
    replies = {("m1", "none"): WRONG, ("m2", "none"): RIGHT, ("m3", "none"): RIGHT}
    fair = run(build_label_free_grader(f"judge-pairwise:fair@{url}/v1").grade(Q, replies))
    # m1 loses both matches; m2 and m3 beat m1 and tie with each other
    assert [fair[p].score for p in replies] == [0.0, 0.75, 0.75]
    before = app.state.requests["biased"]
    biased = run(build_label_free_grader(f"judge-pairwise:biased@{url}/v1").grade(Q, replies))
    assert app.state.requests["biased"] - before == 6  # 3 matches x 2 orders
    # always "[[A]]" never survives the swap: every match is a tie
    assert [biased[p].score for p in replies] == [0.5, 0.5, 0.5]
    assert biased[("m1", "none")].grader.startswith("judge-pairwise:biased")


def test_pairwise_needs_two_replies(judge_url):
    url, _ = judge_url
    one = run(build_label_free_grader(f"judge-pairwise:fair@{url}/v1").grade(Q, {("m1", "none"): RIGHT,
                                                                                 ("m2", "none"): ""}))
    assert math.isnan(one[("m1", "none")].score) and one[("m2", "none")].score == 0.0
    assert isinstance(build_label_free_grader(f"judge-pairwise:fair@{url}/v1"), PairwiseJudge)


def test_judge_endpoint_failure_raises(judge_url):
    url, _ = judge_url
    grader = build_label_free_grader(f"judge:down@{url}/v1")
    with pytest.raises(AtlasError):
        run(grader.grade(Q, {("m1", "none"): RIGHT}))


def test_reference_agreement():
    grader = build_label_free_grader("reference:big@@none")
    grades = run(grader.grade(Q, {("big", "none"): "So it is 1,000. Final answer: 1,000",
                                  ("small", "none"): "\\boxed{1000}", ("tiny", "none"): "Final answer: 999",
                                  ("dead", "none"): ""}))
    assert [grades[(m, "none")].score for m in ("big", "small", "tiny", "dead")] == [1.0, 1.0, 0.0, 0.0]
    assert grades[("small", "none")].grader == "reference:big@@none"
    none = run(grader.grade(Q, {("big", "none"): "", ("small", "none"): RIGHT}))
    assert all(math.isnan(g.score) for g in none.values())
    with pytest.raises(AtlasError, match="not among the pairs"):
        run(grader.grade(Q, {("small", "none"): RIGHT}))


def pooling_app() -> FastAPI:
    """vLLM /pooling reply shape; each step's reward is 0.9 unless the step says 'wrong' (0.2)."""
    app = FastAPI()
    app.state.bodies = []

    @app.post("/pooling")
    async def pooling(request: Request):
        body = await request.json()
        app.state.bodies.append(body)
        data = []
        for i, text in enumerate(body["input"]):
            answer = text.split("<|im_start|>assistant\n", 1)[1]
            steps = [s for s in answer.split("<extra_0>")[:-1]]
            data.append({"index": i, "object": "pooling",
                         "data": [[0.8, 0.2] if "wrong" in s else [0.1, 0.9] for s in steps]})
        return {"object": "list", "data": data}

    return app


def test_reward_model_grader_uses_the_prm_scorer():
    app = pooling_app()
    with running_server(app) as url:
        grader = build_label_free_grader(f"prm:Qwen/Qwen2.5-Math-PRM-7B@{url}/v1")
        grades = run(grader.grade(Q, {("a", "none"): "Step one.\n\nStep two.\n\nFinal answer: 7",
                                      ("b", "none"): "Step one.\n\nThis is wrong.\n\nFinal answer: 8",
                                      ("c", "none"): ""}))
    assert grades[("a", "none")].score == pytest.approx(0.9)
    assert grades[("b", "none")].score == pytest.approx(0.2)  # min over steps
    assert grades[("c", "none")].score == 0.0
    assert grades[("a", "none")].grader == "prm:Qwen/Qwen2.5-Math-PRM-7B/min"
    assert app.state.bodies[0]["model"] == "Qwen/Qwen2.5-Math-PRM-7B" and len(app.state.bodies[0]["input"]) == 2


def test_reward_model_down_is_one_line_error():
    grader = build_label_free_grader("prm:some-prm@http://127.0.0.1:9/v1")
    with pytest.raises(AtlasError, match="grader prm:some-prm/min: reward model request failed"):
        run(grader.grade(Q, {("a", "none"): RIGHT}))


@pytest.mark.parametrize("spec, message", [
    ("oracle:x", "unknown grader"),
    ("judge:", "unknown grader"),
    ("prm:no-url", "expected prm:MODEL_ID@http"),
    ("reference:big", "expected reference:MODEL@@TOOL"),
    ("judge:nosuchmodel", "nosuchmodel"),
])
def test_bad_specs(spec, message):
    pool = Pool.load(None, use_cache=False)
    with pytest.raises(AtlasError, match=message):
        build_label_free_grader(spec, pool)


def test_judge_without_pool_needs_an_endpoint():
    with pytest.raises(AtlasError, match="no pool was given"):
        build_label_free_grader("judge:smollm2-135m")


def _frame(scores):
    rows = []
    for q, pairs in scores.items():
        for m, s in pairs.items():
            rows.append({"query_id": q, "model": m, "tool": "none", "score": s})
    return pd.DataFrame(rows)


def test_agreement_measures():
    gold = _frame({"q1": {"a": 1.0, "b": 0.0}, "q2": {"a": 1.0, "b": 1.0}, "q3": {"a": 0.0, "b": 1.0}})
    judged = _frame({"q1": {"a": 8 / 9, "b": 1 / 9}, "q2": {"a": 8 / 9, "b": math.nan},
                     "q3": {"a": 8 / 9, "b": 8 / 9}})
    lab = label_agreement(gold, judged)
    assert (lab["n"], lab["covered"]) == (6, 5)
    assert lab["accuracy"] == pytest.approx(4 / 5)  # only q3/a disagrees
    assert lab["gold_positive_rate"] == pytest.approx(3 / 5) and lab["judge_positive_rate"] == pytest.approx(4 / 5)
    assert lab["majority_rate"] == pytest.approx(3 / 5) and lab["distinct_judge_scores"] == 2
    assert lab["auc"] == pytest.approx(0.75)  # positives {8/9 x3} vs negatives {1/9, 8/9}: 3 ordered, 3 ties
    pref = preference_agreement(gold, judged)
    # gold separates q1 (a>b, judge agrees) and q3 (b>a, judge ties: 1/2); q2 is not separated by gold
    assert pref == {"pairs": 2, "decided": 2, "agreement": pytest.approx(0.75)}


def test_compare_routers_with_a_grader_that_never_decided():
    from atlas_router.eval.judge_agreement import compare_routers
    from atlas_router.routers.encoders import build_encoder

    rows = [{"query": f"What is {i} plus {i}?", "benchmark": "b", "model": m, "tool": "none",
             "score": float(m == "big" or i % 3 == 0), "cost": 1e-6 if m == "small" else 1e-5}
            for i in range(12) for m in ("big", "small")]
    gold = pd.DataFrame(rows)
    judged = gold.assign(score=math.nan)
    out = compare_routers(gold, judged, ["best-single"], encoder=build_encoder("hashing"))
    assert out["routers"]["best-single"]["judge"]["error"] == "no graded train records"
    assert math.isnan(out["routers"]["best-single"]["judge"]["accuracy"])
    assert out["routers"]["best-single"]["gold"]["accuracy"] == 1.0  # "big" is right on every query
