"""``atlas serve``: the OpenAI-compatible routing gateway on uvicorn.

SIGTERM/SIGINT stop accepting connections and let in-flight requests finish (up to the config's
``graceful_timeout_s``); SIGHUP reloads the pool file and router files without a restart (with
``--workers N``, uvicorn's supervisor answers SIGHUP by replacing the workers one by one).

Speed: uvicorn runs on uvloop and httptools when they are installed (the ``fast`` extra; each reply's
head and body then leave in one write, serve/http_protocol.py), and
``--workers N`` runs N gateway processes behind one port (the kernel spreads connections over them);
the admission limits (max_concurrency, max_queue) are split evenly between them.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Optional

import typer

from atlas_router.errors import AtlasError

_ARGS_ENV = "ATLAS_SERVE_ARGS"  # how the parent hands its options to worker processes (config.ENV_VARS)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _build_app(opts: dict[str, Any], handle_sighup: bool):
    """The gateway app of the CLI options (in the serving process, or in each worker)."""
    from atlas_router.serve.auth import KeyRing
    from atlas_router.serve.gateway import create_gateway_app
    from atlas_router.serve.loaders import load_routers
    from atlas_router.serve.logs import configure_json_logging, gateway_logger
    from atlas_router.serve.settings import load_gateway_settings

    configure_json_logging(opts["log_level"])
    settings = load_gateway_settings(opts["config"])
    if opts.get("records") or opts.get("record_prompts"):  # a record per answer, and POST /v1/feedback
        settings = settings.model_copy(update={"records": records_settings(opts["records"], opts.get("record_prompts"),
                                                                           settings.records)})
    keys = KeyRing.from_sources(settings.api_keys_sha256)
    if not keys.enabled and not _is_loopback(opts["host"]):
        raise AtlasError(f"refusing to serve on {opts['host']} without API keys: set ATLAS_API_KEYS or "
                         "api_keys_sha256 in --config (or bind to 127.0.0.1)")
    if not keys.enabled:
        gateway_logger().warning("no API keys configured: the gateway accepts every request on loopback")
    paths = opts["router"]
    if not paths and opts["pool"] is None:  # the embedded pool routes with the router shipped for it
        from atlas_router.routers.embedded import default_router_path

        paths = [str(default_router_path())]
        gateway_logger().info(f"routing with the shipped router of the embedded pool: {paths[0]}")
    routers, loaders = load_routers(paths, opts["policy"])
    workers = int(opts.get("workers", 1))
    if workers > 1:  # the configured limits are the gateway's: each worker admits its share
        settings = settings.model_copy(update={"max_concurrency": -(-settings.max_concurrency // workers),
                                               "max_queue": -(-settings.max_queue // workers)})
    app = create_gateway_app(pool_path=opts["pool"], routers=routers, router_loaders=loaders, settings=settings,
                             keys=keys, use_cache=False if opts["no_cache"] else None, handle_sighup=handle_sighup,
                             settle_gc=True)
    return app, settings


def records_settings(directory: Optional[str], prompts: Optional[str], configured: Any):
    """``records`` settings from --records/--record-prompts over the config's (flush interval kept)."""
    from atlas_router.serve.settings import RecordsSettings

    base = configured.model_dump() if configured is not None else {}
    if not (directory or base.get("dir")):
        raise AtlasError("--record-prompts needs a record store: give --records DIR (or records.dir in --config)")
    base.update(**({"dir": directory} if directory else {}), **({"prompts": prompts} if prompts else {}))
    try:
        return RecordsSettings.model_validate(base)
    except ValueError:
        raise AtlasError(f"--record-prompts must be off, hashed or full, not {prompts!r}") from None


def worker_app():
    """uvicorn factory for ``--workers N``: each worker builds its own gateway from the parent's options."""
    from atlas_router.config import env

    raw = env(_ARGS_ENV)
    if raw is None:
        raise AtlasError(f"{_ARGS_ENV} is not set: worker_app is the worker factory of `atlas serve --workers N`")
    app, _ = _build_app(json.loads(raw), handle_sighup=False)
    return app


def http_protocol() -> Any:
    """httptools with each reply sent in one write (serve/http_protocol.py) when installed, else uvicorn's choice."""
    try:
        from atlas_router.serve.http_protocol import HeadWithBodyProtocol
    except ImportError:  # no httptools: the fast extra is not installed
        return "auto"
    return HeadWithBodyProtocol


def _uvicorn_options(opts: dict[str, Any], graceful_s: float) -> dict[str, Any]:
    """One place for the server options: no access log, a deep accept backlog, uvloop when installed
    ('auto'), httptools sending each reply in one write, keep-alive long enough for pooled clients."""
    return dict(host=opts["host"], port=opts["port"], log_config=None, log_level=opts["log_level"],
                access_log=False, timeout_graceful_shutdown=int(graceful_s), backlog=4096, loop="auto",
                http=http_protocol(), timeout_keep_alive=30)


def serve(
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML (default: the embedded pool)."),
    router_file: Optional[list[str]] = typer.Option(
        None, "--router-file", help="A saved router file (data only, runs no code); repeat for several. A cluster "
        "router answers to atlas-cluster, a hybrid to atlas-hybrid, ...; 'atlas' takes the best one loaded. "
        "Default with the embedded pool: the router shipped for it."),
    policy: Optional[str] = typer.Option(None, "--policy", help="A trained RL policy directory: served as "
                                         "atlas-rl, and with a cluster router as atlas-hybrid."),
    config: Optional[str] = typer.Option(None, "--config", help="Gateway settings YAML (limits, timeouts, key digests)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the on-disk response cache."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Gateway processes behind the port "
                                "(the admission limits are split between them)."),
    records: Optional[str] = typer.Option(None, "--records", help="Record store directory: a record per answered "
                                          "request, and POST /v1/feedback (overrides the config's records.dir)."),
    record_prompts: Optional[str] = typer.Option(None, "--record-prompts", help="Prompt text in the records: off, "
                                                 "hashed (salted HMAC) or full (needed to refit); default off."),
) -> None:
    """Serve POST /v1/chat/completions (model 'atlas' routes; pool model names pass through)."""
    from atlas_router.serve.auth import scrub_key_environ

    scrub_key_environ()  # plain keys in the environment: hash them and re-execute without them
    import uvicorn

    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise AtlasError(f"--log-level must be debug, info, warning or error, not {log_level!r}")
    opts = {"pool": pool, "router": router_file or [], "policy": policy, "config": config, "host": host, "port": port,
            "log_level": log_level.lower(), "no_cache": no_cache, "records": records, "record_prompts": record_prompts}
    app, settings = _build_app(opts, handle_sighup=workers == 1)  # bad input fails here, before any worker
    if workers == 1:
        uvicorn.run(app, **_uvicorn_options(opts, settings.graceful_timeout_s))
        return
    del app
    from atlas_router.config import export_env

    export_env(_ARGS_ENV, json.dumps(opts))
    uvicorn.run("atlas_router.cli.serve:worker_app", factory=True, workers=workers,
                **_uvicorn_options(opts, settings.graceful_timeout_s))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
