"""The RL paths of the gateway with real (tiny) policies: ``atlas-rl`` answers with the policy and falls
back to pairs when the policy gives no answer; ``atlas-hybrid`` sends in-distribution queries the cluster
way and the rest to the policy. One policy is trained here in seconds to always answer "<answer>42</answer>";
the other is an untrained random model that never answers."""

from __future__ import annotations

import httpx
import pytest
import torch

from atlas_router.errors import AtlasError
from atlas_router.rl.env import DEFAULT_MAX_ROUTES, DEFAULT_OBS_TOKEN_CAP, LiveExecutor, RoutingEnv
from atlas_router.rl.policies import TinySpec, save_policy, tiny_model, vocab_subset
from atlas_router.rl.protocol import PoolView
from atlas_router.rl.rollout import prompt_ids
from atlas_router.serve.auth import KeyRing
from atlas_router.serve.gateway import create_gateway_app
from atlas_router.serve.loaders import load_routers
from atlas_router.serve.policy import PolicyRouter
from atlas_router.serve.settings import GatewaySettings
from support.gateway_helpers import http_pool
from support.rl import smollm2_tokenizer
from support.servers import running_server
from support.stub_upstream import create_stub_upstream
from test_serve_cluster import fit_and_save

OOD_QUESTION = "what is 40 plus 43 in arithmetic"  # outside the cluster router's training distribution
KNOWN_QUESTION = "which king ruled france in the year 1610 history"
SHORT = {"max_turn_tokens": 24, "max_response_tokens": 40}


def train_answering_policy(directory, pool, question: str) -> None:
    """Overfit a tiny policy to answer <answer>42</answer> to ``question`` under this pool's prompt (a
    subset vocabulary keeps the head small, so this takes a few dozen quick steps)."""
    tok = smollm2_tokenizer()
    answer = "<answer>42</answer>"
    model = tiny_model(tok, TinySpec(hidden=32, intermediate=64, heads=2), seed=0, vocab=vocab_subset(tok, [answer]))
    env = RoutingEnv(PoolView.from_config(pool.config), LiveExecutor(pool), max_routes=DEFAULT_MAX_ROUTES,
                     obs_token_cap=DEFAULT_OBS_TOKEN_CAP, tokenizer=tok)
    prompt = prompt_ids(tok, env, question)
    target = list(tok.encode(answer, add_special_tokens=False))
    ids = torch.tensor([prompt + target])
    rows = model.index[torch.tensor(target)]  # head rows of the answer's tokens
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # 3e-2 oscillated on the shorter pool prompt
    model.train()
    for _ in range(300):
        hidden = model.get_decoder()(input_ids=ids).last_hidden_state[0, len(prompt) - 1: -1]
        logits = model.get_output_embeddings()(hidden)
        if (logits.argmax(-1) == rows).all() and logits.softmax(-1).max(-1).values.min() > 0.9:
            break  # greedy decoding writes the answer, with a wide margin
        loss = torch.nn.functional.cross_entropy(logits, rows)
        opt.zero_grad()
        loss.backward()
        opt.step()
    else:
        raise AssertionError(f"the tiny policy did not learn its answer (loss {loss.item():.3f})")
    save_policy(directory, tok, model, meta=SHORT)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models run far faster on one thread than on two threads fighting over a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    """(folder with the 'answers' and 'random' policies and a cluster router file, upstream URL)."""
    tmp = tmp_path_factory.mktemp("policy")
    with running_server(create_stub_upstream()) as up:
        train_answering_policy(tmp / "answers", http_pool(up, ["cheap", "strong"]), OOD_QUESTION)
        tok = smollm2_tokenizer()
        save_policy(tmp / "random", tok, tiny_model(tok, TinySpec(hidden=32, intermediate=64, heads=2), seed=3),
                    meta=SHORT)
        fit_and_save(tmp / "cluster.joblib", history_winner="strong")
        yield tmp, up


@pytest.fixture(scope="module")
def served(policies):
    tmp, up = policies
    routers, loaders = load_routers([tmp / "cluster.joblib"], tmp / "answers")
    routers["atlas-rl"] = PolicyRouter(tmp / "random")  # atlas-rl: the policy that never answers
    app = create_gateway_app(http_pool(up, ["cheap", "strong"]), routers=routers, router_loaders=loaders,
                             settings=GatewaySettings(), keys=KeyRing())
    with running_server(app) as gw:
        yield gw


def _ask(gw: str, model: str, question: str) -> httpx.Response:
    return httpx.post(f"{gw}/v1/chat/completions", timeout=60,
                      json={"model": model, "messages": [{"role": "user", "content": question}]})


def test_models_list_the_rl_routers(served):
    names = [m["id"] for m in httpx.get(f"{served}/v1/models").json()["data"]]
    assert names == ["atlas", "atlas-cluster", "atlas-rl", "atlas-hybrid", "cheap", "strong"]
    r = _ask(served, "atlas", KNOWN_QUESTION)
    assert r.json()["atlas"]["router"] == "atlas-hybrid"  # 'atlas' prefers the hybrid router


def test_hybrid_sends_unfamiliar_queries_to_the_policy(served):
    r = _ask(served, "atlas-hybrid", OOD_QUESTION)
    assert r.status_code == 200, r.text
    atlas = r.json()["atlas"]
    assert r.json()["choices"][0]["message"]["content"] == "42"
    assert atlas["model"] == "policy" and atlas["pair"] is None and atlas["router"] == "atlas-hybrid"
    assert atlas["explanation"]["path"] == "rl" and "out of distribution" in atlas["explanation"]["path_reason"]
    assert atlas["explanation"]["finish"] == "answer" and atlas["attempts"][0]["outcome"] == "ok"
    assert r.headers["x-atlas-model"] == "policy"


def test_hybrid_keeps_familiar_queries_on_the_cluster_path(served):
    atlas = _ask(served, "atlas-hybrid", KNOWN_QUESTION).json()["atlas"]
    assert atlas["explanation"]["path"] == "cluster" and atlas["pair"] == "strong@@none"
    assert [a["model"] for a in atlas["attempts"]] == ["strong"]  # the policy was not consulted


def test_policy_without_an_answer_falls_back_to_pairs(served):
    r = _ask(served, "atlas-rl", "what is 6 * 7?")
    assert r.status_code == 200, r.text
    atlas = r.json()["atlas"]
    assert atlas["attempts"][0]["model"] == "policy" and atlas["attempts"][0]["outcome"] == "failed"
    assert "gave no answer" in atlas["attempts"][0]["error"]
    assert atlas["pair"] == "cheap@@none" and atlas["fallbacks"] == 1  # the default rule's pair answered
    assert r.json()["choices"][0]["message"]["content"].startswith("cheap says: what is 6 * 7?")


def test_gateway_answers_other_requests_while_a_policy_runs(tmp_path):
    """Policy tokens are generated on the policy's own thread: /health stays fast during an episode."""
    import asyncio
    import time

    tok = smollm2_tokenizer()
    save_policy(tmp_path / "slow", tok, tiny_model(tok, TinySpec(hidden=32, intermediate=64, heads=2), seed=5),
                meta={"max_turn_tokens": 600, "max_response_tokens": 600})
    policy = PolicyRouter(tmp_path / "slow")
    with running_server(create_stub_upstream()) as up:
        app = create_gateway_app(http_pool(up, ["cheap"]), routers={"atlas-rl": policy}, keys=KeyRing())
        with running_server(app) as gw:
            async def both():
                async with httpx.AsyncClient(timeout=60) as http:
                    t0 = time.perf_counter()
                    rl = asyncio.create_task(http.post(f"{gw}/v1/chat/completions", json={
                        "model": "atlas-rl", "messages": [{"role": "user", "content": "a long episode"}]}))
                    await asyncio.sleep(0.1)  # the episode is under way
                    health_s = []
                    while not rl.done():
                        t = time.perf_counter()
                        assert (await http.get(f"{gw}/health")).status_code == 200
                        health_s.append(time.perf_counter() - t)
                        await asyncio.sleep(0.02)
                    return (await rl), time.perf_counter() - t0, health_s

            response, episode_s, health_s = asyncio.run(both())
    policy.close()
    assert response.status_code == 200
    assert episode_s > 0.5 and len(health_s) >= 3, (episode_s, health_s)
    assert max(health_s) < episode_s / 3  # never held up for the length of the episode


def test_reload_swaps_in_a_new_policy_and_retires_the_old_one(policies):
    tmp, up = policies
    old = PolicyRouter(tmp / "random")
    app = create_gateway_app(http_pool(up, ["cheap", "strong"]), routers={"atlas-rl": old},
                             router_loaders={"atlas-rl": lambda: PolicyRouter(tmp / "answers")}, keys=KeyRing())
    with running_server(app) as gw:
        before = _ask(gw, "atlas-rl", OOD_QUESTION).json()["atlas"]
        assert before["attempts"][0]["outcome"] == "failed" and before["pair"] == "cheap@@none"
        assert httpx.post(f"{gw}/admin/reload").json()["routers"] == ["atlas-rl"]
        after = _ask(gw, "atlas-rl", OOD_QUESTION)
        assert after.json()["choices"][0]["message"]["content"] == "42"
        old.worker._thread.join(timeout=20)
        assert not old.worker._thread.is_alive()  # the retired policy's thread ended


def test_policy_router_refuses_a_directory_without_a_policy(tmp_path):
    with pytest.raises(AtlasError, match="not an RL policy directory"):
        PolicyRouter(tmp_path)
    with pytest.raises(AtlasError, match="not an RL policy directory"):
        load_routers([], tmp_path / "missing")
