"""ATLAS path 2: RL-driven multi-step routing.

A policy reads a prompt generated from the live pool, thinks, routes (``<search> model@@tool: input
</search>``) up to four times, reads each result (``<information>``) and answers. Modules: protocol
(prompt, tags, parser), env (episodes, executors), replay (records as environment), rewards, rollout
(token level), ppo (losses, GAE), trainer, policies, warm_start (grammar only), suite and presets (the built-in
cpu-replay run), report (baselines, intervals), hybrid (cluster router + policy), inference, verl_adapter (scale-out, optional).
Nothing here but ``verl_adapter`` imports a training engine.
"""
