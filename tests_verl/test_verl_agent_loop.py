"""Our agent loop run the way veRL 0.9 runs it: veRL's ``AgentLoopWorker`` reads the agent-loop file that
``verl_launch`` generated, hydra-instantiates ``AtlasRoutingAgentLoop`` per episode and drives it with a
batch from veRL's own ``RLHFDataset`` over our ``train.parquet``. Tokens come from a loopback token
generator (a real HTTP server on 127.0.0.1 speaking token ids, standing in for vLLM): a scripted policy
that routes to a pair and copies the answer that comes back.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import torch
from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
from verl.protocol import DataProto
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn
from verl.workers.rollout.replica import TokenOutput

from atlas_router.rl.protocol import STOP_STRINGS
from atlas_router.rl.verl_launch import prepare
from verl_config import composed

PAIR = "small-lm@@calculator"


class _Generator(BaseHTTPRequestHandler):
    """POST /generate {prompt_ids, max_tokens}: the next turn of a scripted policy, as token ids.

    Like vLLM, generation stops after a stop string (its tokens are in the output) or at EOS.
    """

    tokenizer = None

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        tok = self.tokenizer
        context = tok.decode(body["prompt_ids"])
        turn = context.rsplit("<|im_start|>assistant", 1)[-1]
        infos = re.findall(r"<information>(.*?)</information>", turn, re.S)
        if not infos:
            question = context.rsplit("<|im_start|>user\n", 1)[-1].split("<|im_end|>")[0]
            ids = tok.encode(f"<think>arithmetic goes to the calculator</think>\n<search>{PAIR}: {question}</search>",
                             add_special_tokens=False)
        else:
            answer = infos[-1].rsplit(":", 1)[-1].strip()
            ids = tok.encode(f"<answer>{answer}</answer>", add_special_tokens=False) + [tok.eos_token_id]
        ids = ids[: body["max_tokens"]]
        data = json.dumps({"token_ids": ids, "log_probs": [-0.25] * len(ids)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


class LoopbackServerManager:
    """veRL's server-manager interface (``generate(request_id, *, prompt_ids, sampling_params, ...)``)
    over HTTP to the loopback generator; records every call's sampling parameters."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.calls: list[dict] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        self.calls.append(dict(sampling_params))
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(f"{self.url}/generate", json={"prompt_ids": list(prompt_ids),
                                                                 "max_tokens": sampling_params["max_tokens"]})
        r.raise_for_status()
        out = r.json()
        return TokenOutput(token_ids=out["token_ids"], log_probs=out["log_probs"], stop_reason="completed")


@pytest.fixture(scope="module")
def verl_run(tmp_path_factory):
    """veRL's composed trainer config for our generated run, on a local model directory (SmolLM2's
    tokenizer and a one-layer Llama config: nothing is downloaded)."""
    from transformers import LlamaConfig

    from atlas_router.rl.policies import smollm2_tokenizer

    root = tmp_path_factory.mktemp("verl")
    tok = smollm2_tokenizer()
    model_dir = root / "model"
    tok.save_pretrained(model_dir)
    LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, architectures=["LlamaForCausalLM"], bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id).save_pretrained(model_dir)
    command = prepare(root / "run", suite=True, overrides={
        "actor_rollout_ref.model.path": str(model_dir), "critic.model.path": str(model_dir),
        "data.max_prompt_length": 1024, "data.max_response_length": 512})
    assert command[1:3] == ["-m", "verl.trainer.main_ppo"]
    return composed(command[3:]), tok


@pytest.fixture()
def generator(verl_run):
    _, tok = verl_run
    handler = type("Handler", (_Generator,), {"tokenizer": tok})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LoopbackServerManager(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()


async def test_veRL_builds_our_loop_from_the_generated_config_and_runs_episodes(verl_run, generator):
    cfg, tok = verl_run
    assert Path(cfg.actor_rollout_ref.rollout.agent.agent_loop_config_path).is_file()
    worker = AgentLoopWorker(cfg, llm_client=generator)  # veRL reads our agent-loop file here
    dataset = RLHFDataset(data_files=cfg.data.train_files, tokenizer=tok, config=cfg.data, processor=None)
    rows = [dataset[i] for i in range(len(dataset)) if dataset[i]["extra_info"]["domain"] == "arithmetic"][:2]
    rows += [dataset[i] for i in range(len(dataset)) if dataset[i]["extra_info"]["domain"] == "capital"][:1]
    batch = DataProto.from_single_dict(collate_fn(rows))
    assert list(batch.non_tensor_batch["agent_name"]) == ["atlas_routing"] * 3

    out = await worker.generate_sequences(batch)

    resp_len = int(cfg.actor_rollout_ref.rollout.response_length)
    assert out.batch["responses"].shape == (3, resp_len) and out.batch["response_mask"].shape == (3, resp_len)
    for i in range(3):
        terms = out.non_tensor_batch["atlas_reward"][i]
        routes = out.non_tensor_batch["atlas_routes"][i]
        assert out.non_tensor_batch["atlas_finish"][i] == "answer" and terms["format_valid"], terms["format_problems"]
        assert [(r["model"], r["tool"], r["source"]) for r in routes] == [("small-lm", "calculator", "replay")]
        # the reward sits on the last response token, and it is our composite reward
        scores, valid = out.batch["rm_scores"][i], out.batch["attention_mask"][i, -resp_len:]
        last = int(valid.nonzero().max())
        assert float(scores[last]) == pytest.approx(terms["total"]) and float(scores.abs().sum()) == pytest.approx(abs(terms["total"]))
        # the observation's tokens carry mask 0, the policy's tokens mask 1, padding mask 0
        ids, mask = out.batch["responses"][i], out.batch["response_mask"][i]
        policy_text = tok.decode(ids[mask.bool()])
        obs_text = tok.decode(ids[(mask == 0) & valid.bool()])
        assert obs_text.strip().startswith("<information>") and obs_text.strip().endswith("</information>")
        assert "<information>" not in policy_text and policy_text.startswith("<think>") and "</answer>" in policy_text
        assert int(mask[~valid.bool()].sum()) == 0
    # arithmetic: the calculator pair is optimal and right (reward 1); a capital: right pair missed
    assert [out.non_tensor_batch["atlas_reward"][i]["total"] for i in range(2)] == [1.0, 1.0]
    capital = out.non_tensor_batch["atlas_reward"][2]
    assert capital["sel"] == -0.15 and capital["out"] == 0.0
    # every generate call carried our stop strings and a token budget within the response length
    assert generator.calls and all(c["stop"] == list(STOP_STRINGS) and 0 < c["max_tokens"] <= resp_len
                                   for c in generator.calls)
    assert torch.equal(out.batch["input_ids"][:, -resp_len:], out.batch["responses"])
