"""The grammar-only warm start's demonstrations: random pairs, several per question, the observed answer
copied token for token."""

from __future__ import annotations

from collections import defaultdict

from atlas_router.rl.config import parse_train_config
from atlas_router.rl.setup import build_parts
from atlas_router.rl.warm_start import grammar_demos, grammar_turns

CFG = {
    "policy": {"kind": "tiny", "tiny": {"hidden": 32, "intermediate": 64, "heads": 2}},
    "data": {"suite": True, "max_train_tasks": 60, "max_eval_tasks": 4},
    "threads": 1,
}


async def test_each_question_is_demonstrated_with_distinct_random_pairs_and_the_answer_is_copied():
    parts = build_parts(parse_train_config(CFG))
    tok = parts.tokenizer
    demos = await grammar_demos(tok, parts.env, parts.train_tasks, pairs_per_task=4, seed=3)
    by_prompt: dict[tuple[int, ...], list] = defaultdict(list)
    for demo in demos:
        by_prompt[tuple(demo.prompt_ids)].append(demo)
    assert len(by_prompt) == len(parts.train_tasks) and len(demos) == 4 * len(parts.train_tasks)
    answers_differ = 0
    for group in by_prompt.values():
        texts = [tok.decode(d.response_ids) for d in group]
        routes = [t.split("<search>")[1].split(":")[0] for t in texts]
        assert len(set(routes)) == 4, routes  # distinct pairs for one question
        answers = []
        for demo, text in zip(group, texts):
            # the copied answer repeats the observation's tokens: " Lima" in "Final answer: Lima" is " Lima" again
            answer = text.split("<answer>")[1].split("</answer>")[0]
            observed = text.split("<information>")[1].split("</information>")[0]
            answer_ids = tok.encode(answer, add_special_tokens=False)
            obs_ids = tok.encode(observed, add_special_tokens=False)
            assert answer.startswith(" ") and any(obs_ids[i:i + len(answer_ids)] == answer_ids
                                                 for i in range(len(obs_ids))), (answer, observed)
            # only the policy's own tokens are imitated: the observation is masked out
            masked = [t for t, m in zip(demo.response_ids, demo.mask) if m]
            assert "<information>" not in tok.decode(masked)
            answers.append(answer)
        answers_differ += len(set(answers)) > 1
    # the same question carries different answers, so copying (not memorising) is what fits the demos
    assert answers_differ >= len(by_prompt) // 2


async def test_pairs_are_drawn_with_no_regard_to_the_question():
    parts = build_parts(parse_train_config(CFG))
    demos = await grammar_demos(parts.tokenizer, parts.env, parts.train_tasks, pairs_per_task=1, seed=0)
    pairs = [parts.tokenizer.decode(d.response_ids).split("<search>")[1].split(":")[0] for d in demos]
    assert len(set(pairs)) >= 6  # of the pool's 8 pairs, over 60 questions
    first, final = grammar_turns(("small-lm", "calculator"), "What is 2 + 2?", "4")
    assert "small-lm@@calculator: What is 2 + 2?" in first and final == "<answer> 4</answer>"
