"""Baselines on the same records and interface: random, best-single, oracle, kNN, MLP, RouterDC, the
BERT-style fine-tuned MiniLM, and the LLM routers (with a scripted chat model: a hosted LLM cannot be
reached from the tests, and the parsing/fallback logic is what is under test)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas_router.routers.persist import save_router
from atlas_router.config import ModelSpec
from atlas_router.errors import AtlasError
from atlas_router.eval.replay import ReplayTable, evaluate_router
from atlas_router.eval.split import split_records
from atlas_router.models.base import ChatModel, Completion
from atlas_router.routers import load_router, make_router, router_names
from atlas_router.routers.encoders import build_encoder
from support.routing_data import synthetic_records


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("hashing:256", cache=False)


@pytest.fixture(scope="module")
def split():
    return split_records(synthetic_records(n_per_topic=200, seed=1), test_size=0.3, seed=0)


def accuracy(name, split, encoder, **params):
    train, test = split
    router = make_router(name, alpha=0.0, **params).fit(test if name == "oracle" else train, encoder)
    return evaluate_router(name, router, ReplayTable(test)).overall.accuracy, router


def test_registry_knows_every_router_and_rejects_unknown_names():
    assert {"atlas-cluster", "random", "best-single", "oracle", "knn", "mlp", "bert", "routerdc", "zero-shot",
            "few-shot"} <= set(router_names())
    with pytest.raises(AtlasError, match="unknown router 'nope'"):
        make_router("nope")
    with pytest.raises(AtlasError, match="unexpected keyword"):
        make_router("knn", bogus=1)


def test_random_is_seeded_and_independent_of_batch_order(split, encoder):
    train, _ = split
    r = make_router("random", seed=3).fit(train, encoder)
    qs = ["a", "b", "c", "d", "e", "f"]
    picks = [d.pair for d in r.route(qs)]
    assert picks == [d.pair for d in r.route(qs)] and picks[::-1] == [d.pair for d in r.route(qs[::-1])]
    other = make_router("random", seed=4).fit(train, encoder)
    assert len(set(picks)) > 1 and picks != [d.pair for d in other.route(qs)]


def test_best_single_takes_the_best_mean_and_the_cheaper_on_ties(encoder):
    rows = []
    for i in range(10):
        for model, cost in (("pricey", 2.0), ("cheap", 1.0), ("bad", 0.1)):
            rows.append({"query_id": f"q{i}", "query": f"q {i}", "model": model, "tool": "none",
                         "score": 0.0 if model == "bad" else float(i % 2), "cost": cost})
    r = make_router("best-single").fit(pd.DataFrame(rows))
    assert {d.pair for d in r.route(["x", "y"])} == {("cheap", "none")}


def test_oracle_is_the_upper_bound_fitted_on_the_test_records(split, encoder):
    acc, router = accuracy("oracle", split, encoder)
    best, _ = accuracy("best-single", split, encoder)
    print("oracle", acc, "best-single", best)
    assert acc > best and acc > 0.95
    on_train = make_router("oracle").fit(split[0])
    with pytest.raises(AtlasError, match="fit it on the records"):
        on_train.route([split[1]["query"].iloc[0]])
    with pytest.raises(AtlasError, match="no records for query"):
        router.route(["never seen"])


@pytest.mark.parametrize("name", ["knn", "mlp", "routerdc"])
def test_learned_baselines_learn_the_topics(name, split, encoder):
    acc, router = accuracy(name, split, encoder)
    rnd, _ = accuracy("random", split, encoder)
    best, _ = accuracy("best-single", split, encoder)
    facts, arith = "In which year did event 55 happen? (case 1)", "Add 12 and 30 then subtract 4. (case 1)"
    pred = router.predict_accuracy([facts, arith])
    search, code = router.pairs_.index(("large", "web_search")), router.pairs_.index(("large", "python_code"))
    print(f"{name}: accuracy {acc:.3f} (random {rnd:.3f}, best-single {best:.3f}); predicted search/code on facts "
          f"{pred[0, search]:.2f}/{pred[0, code]:.2f}, on arithmetic {pred[1, search]:.2f}/{pred[1, code]:.2f}")
    assert acc > best > rnd
    if name != "mlp":  # the MLP's outputs barely move on hashed words (early stopping ends it soon); it still ranks
        assert pred[0, search] > pred[1, search] and pred[1, code] > pred[0, code]  # search for facts, code for sums
    d = router.route([facts])[0]
    assert d.explanation["router"] == name and len(d.explanation["top"]) == 3


def test_baselines_save_and_load(split, encoder, tmp_path):
    train, test = split
    qs = test["query"].unique()[:20].tolist()
    for name in ("knn", "mlp", "routerdc", "best-single"):
        r = make_router(name, alpha=0.3).fit(train, encoder)
        loaded = load_router(save_router(r, tmp_path / f"{name}.atlas"), encoder)
        assert [d.pair for d in loaded.route(qs)] == [d.pair for d in r.route(qs)], name


def test_bert_fine_tunes_and_predicts_after_reload(split, tmp_path):
    train, test = split
    router = make_router("bert", alpha=0.0, epochs=4, max_length=32, batch_size=16).fit(train)
    qs = ["What is 12 plus 30? (case 3)", "Who wrote the novel number 9? (case 3)"]
    before = router.predict_accuracy(qs)
    j_search = router.pairs_.index(("large", "web_search"))
    print("bert predicted accuracies:\n", np.round(before, 2), "\npairs", router.pairs_)
    assert before.shape == (2, 6) and ((before > 0) & (before < 1)).all()
    assert before[1, j_search] > before[0, j_search]  # search helps facts more than arithmetic
    loaded = load_router(save_router(router, tmp_path / "bert.atlas"))
    assert np.allclose(loaded.predict_accuracy(qs), before, atol=1e-5)
    with pytest.raises(AtlasError, match="routes query texts"):
        router.route(np.zeros((1, 384), dtype=np.float32))


class ScriptedChat(ChatModel):
    """A chat model replying from a script (stands in for a hosted LLM the tests cannot reach)."""

    def __init__(self, replies):
        super().__init__(ModelSpec(name="scripted", backend="openai", endpoint="http://127.0.0.1:9/v1"))
        self.replies = list(replies)
        self.seen = []

    async def _chat(self, messages, params):
        self.seen.append(messages)
        return Completion(self.replies[len(self.seen) - 1], 10, 1)


def test_llm_routers_parse_choices_tolerantly_and_fall_back(split):
    train, _ = split
    chat = ScriptedChat(["2", "I would use small+web_search here.", "no idea", "Option 9!"])
    r = make_router("zero-shot", model=chat, alpha=0.0).fit(train)
    decisions = r.route(["q1", "q2", "q3", "q4"])
    print([(d.pair, d.explanation["fallback"]) for d in decisions])
    assert decisions[0].pair == r.pairs_[r.routable_[1]]
    assert decisions[1].pair == ("small", "web_search")
    best = r.pairs_[r.fallback_]
    assert decisions[2].pair == best and "unparsable reply" in decisions[2].explanation["fallback"]
    assert decisions[3].pair == best  # 9 is not an option number
    system = chat.seen[0][0]["content"]
    assert "large+python_code" in system and "accuracy on past questions" in system and len(chat.seen[0]) == 2


def test_few_shot_shows_examples_with_their_best_pair(split):
    train, _ = split
    chat = ScriptedChat(["1"])
    r = make_router("few-shot", model=chat, alpha=0.0, n_examples=3).fit(train)
    r.route(["What is 2 plus 2?"])
    msgs = chat.seen[0]
    assert len(msgs) == 1 + 2 * 3 + 1 and [m["role"] for m in msgs[1:3]] == ["user", "assistant"]
    assert msgs[2]["content"].isdigit()
    assert len({m["content"] for m in msgs[1:-1:2]}) == 3  # three different example questions
    with pytest.raises(AtlasError, match="needs a chat model"):
        make_router("few-shot").fit(train).route(["x"])
