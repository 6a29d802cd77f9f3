"""Greedy decoding of many pages on one static KV cache: pages join and leave (continuous batching).

`SlotDecoder` owns a KV cache of `slots` rows x `cache_len` positions. Each page is prefilled alone
(vision tower, then transformers' own Qwen2 forward over its prompt, exactly as generate() does it)
and its keys and values are copied into a free row; every row then advances one token per decoding
step, each at its own position, and a row whose page ended (end token, its token limit, its
timeout) is refilled with the next page at the next chunk boundary instead of idling until the
longest page of a static batch is done. Rows are independent (each attends to its own cache row,
masked at its own length), so a page gets the same tokens whatever else shares the cache.

The decoding step is one fixed-shape function of the whole cache (all rows, idle ones masked):
embeddings, 28 layers, lm_head, greedy choice, min-new-tokens masking, the non-finite-logits flag
and the per-row stop test all happen on the device, so on CUDA the step is captured once as a CUDA
graph (optionally over torch.compile's fused kernels) and replayed `chunk` times between host
synchronisations: no host sync per token. Its shapes depend only on (slots, cache_len), never on
the batch's page count or prompt lengths, so nothing recompiles when those change.

With `overlap`, pages are prefilled ahead on a second CUDA stream while the rows already admitted
decode: the vision tower (compute-bound) runs beside the decoding steps (memory-bound).

Only greedy decoding without repetition controls runs here; the engine sends anything else
(sampling, repetition_penalty, no_repeat_ngram_size) to transformers' generate().
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

# Cache lengths are rounded up to this, so that pages of a slightly different size reuse the same
# cache (and the same compiled, captured step) and the attention rows stay aligned.
CACHE_BUCKET = 1024


def cache_length_for(prompt_tokens: int, max_new_tokens: int, bucket: int = CACHE_BUCKET) -> int:
    """Cache positions a page needs (its prompt and every generated token but the last), rounded up."""
    needed = prompt_tokens + max_new_tokens - 1
    return max(bucket, -(-needed // bucket) * bucket)


@dataclass
class Request:
    """One page to decode: its model inputs (batch of one, on any device) and its limits."""

    key: Any
    inputs: dict[str, torch.Tensor]  # input_ids [1, P], attention_mask [1, P], pixel_values, image_grid_thw
    max_new_tokens: int
    min_new_tokens: int = 0
    timeout: float | None = None


@dataclass
class Finished:
    key: Any
    tokens: list[int]  # generated tokens, the end token included when there was one
    stop_reason: str  # eos | max_tokens | timeout | loop
    prompt_tokens: int
    nonfinite: bool
    seconds: float  # from the start of its prefill to the chunk boundary where it was seen finished
    loop: Any = None  # engines/vlm.py Loop, when the loop check ended the row


class _Pending:
    """An iterator of requests that can say whether it has more without losing one."""

    def __init__(self, requests: Iterable[Request]):
        self._it: Iterator[Request] = iter(requests)
        self._next: Request | None = None
        self._done = False

    def __bool__(self) -> bool:
        if self._next is None and not self._done:
            self._next = next(self._it, None)
            self._done = self._next is None
        return self._next is not None

    def popleft(self) -> Request:
        if not self:
            raise IndexError("no more requests")
        request, self._next = self._next, None
        assert request is not None
        return request


@dataclass
class _Staged:
    request: Request
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    first: torch.Tensor  # [1] long, on the device
    bad: torch.Tensor  # [1] bool
    prompt_tokens: int
    began: float
    ready: torch.cuda.Event | None = None


@dataclass
class _Row:
    staged: _Staged
    tokens: list[int] = field(default_factory=list)
    count: int = 1
    timed_out: bool = False
    checked: int = 0  # generated tokens when the loop check last looked
    loop: Any = None


@dataclass
class DecodeStats:
    steps: int = 0
    chunks: int = 0
    prefills: int = 0
    prefill_s: float = 0.0  # host time spent launching/running prefills on the main stream
    decode_s: float = 0.0
    compile_s: float = 0.0  # building the step: tracing, compiling, capturing (first use of a shape)
    step_mode: str = "eager"  # eager | graph | compile+graph
    fallback: str = ""  # why the step is not what was asked for


class SlotDecoder:
    """Greedy decoding of pages on `slots` rows of a static cache of `cache_len` positions."""

    def __init__(
        self,
        model: Any,
        slots: int,
        cache_len: int,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        *,
        chunk: int = 16,
        graphs: bool | None = None,
        compile: bool | None = None,
        overlap: bool = False,
        lookahead: int | None = None,
        refill: str = "continuous",
    ):
        if refill not in ("continuous", "static"):
            raise ValueError(f"refill must be 'continuous' or 'static', got {refill!r}")
        self.model = model
        self.device = model.device
        cuda = self.device.type == "cuda"
        # Set by the engine for each run: a row's generated ids -> a Loop when its tail repeats
        # (engines/vlm.py find_loop), looked at every `loop_every` tokens at chunk boundaries.
        self.loop_check: Callable[[list[int]], Any] | None = None
        self.loop_every = 32
        self.slots, self.cache_len, self.chunk = slots, cache_len, chunk
        self.graphs = cuda if graphs is None else graphs and cuda
        self.compile = self.graphs if compile is None else compile and cuda
        self.overlap = overlap and cuda
        self.lookahead = slots if lookahead is None else lookahead
        self.refill = refill
        self.eos = list(eos_token_ids)
        self.pad = pad_token_id
        self.stats = DecodeStats()
        config = model.config
        self.layers = config.num_hidden_layers
        kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        dtype = model.model.embed_tokens.weight.dtype
        dev = self.device

        def zeros(*shape: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.zeros(*shape, dtype=dtype, device=dev)

        self.k = [zeros(slots, kv_heads, cache_len, self.head_dim, dtype=dtype) for _ in range(self.layers)]
        self.v = [zeros(slots, kv_heads, cache_len, self.head_dim, dtype=dtype) for _ in range(self.layers)]
        self.tokens = zeros(slots)  # each row's last token: the next step's input
        self.pos = zeros(slots)  # its position, which is also its cache slot
        self.count = zeros(slots)  # tokens generated so far (the prefill's first one included)
        self.limit = zeros(slots)
        self.min_len = zeros(slots)
        self.active = zeros(slots, dtype=torch.bool)
        self.bad = zeros(slots, dtype=torch.bool)
        self.out = torch.full((slots, chunk), pad_token_id, dtype=torch.long, device=dev)
        self.col = zeros(1)
        self.rows = torch.arange(slots, device=dev)
        self.slot_ids = torch.arange(cache_len, device=dev)
        self.eos_t = torch.tensor(self.eos, dtype=torch.long, device=dev)
        self.eos_mask = torch.zeros(config.vocab_size, dtype=torch.bool, device=dev)
        self.eos_mask[self.eos_t] = True
        self._step: Callable[[], None] = self._eager_step
        self._built = False
        self._side = torch.cuda.Stream(device=dev) if self.overlap else None
        if cuda:
            self._host = {
                name: torch.empty(getattr(self, name).shape, dtype=getattr(self, name).dtype, pin_memory=True)
                for name in ("out", "count", "active", "bad")
            }

    # -- the decoding step (fixed shapes; no host sync) ------------------------------------------

    def _eager_step(self) -> None:
        model = self.model
        decoder = model.model
        x = decoder.embed_tokens(self.tokens[:, None])  # [S, 1, H]
        cos, sin = decoder.rotary_emb(x, self.pos[:, None])
        visible = (self.slot_ids[None, :] <= self.pos[:, None])[:, None, None, :]  # [S, 1, 1, L]
        batch = x.shape[0]
        for i, layer in enumerate(decoder.layers[: self.layers]):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(batch, 1, -1, self.head_dim).transpose(1, 2)  # [S, heads, 1, D]
            k = attn.k_proj(h).view(batch, 1, -1, self.head_dim).transpose(1, 2)  # [S, kv, 1, D]
            v = attn.v_proj(h).view(batch, 1, -1, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            self.k[i][self.rows, :, self.pos] = k[:, :, 0]
            self.v[i][self.rows, :, self.pos] = v[:, :, 0]
            kv_heads = k.shape[1]
            packed = q.reshape(batch, kv_heads, -1, self.head_dim)  # query head h on KV head h // groups
            scores = torch.matmul(packed, self.k[i].transpose(2, 3)) * attn.scaling
            scores = scores.masked_fill(~visible, float("-inf"))
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
            o = torch.matmul(probs, self.v[i]).reshape(batch, -1, 1, self.head_dim).transpose(1, 2)
            x = x + attn.o_proj(o.reshape(batch, 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        logits = model.lm_head(decoder.norm(x))[:, 0].float()
        self._choose(logits)

    def _choose(self, logits: torch.Tensor) -> None:
        """Greedy choice, in place on the row state: what HF's MinNewTokens + argmax + stop test do."""
        early = (self.count < self.min_len)[:, None] & self.eos_mask[None, :]
        logits = logits.masked_fill(early, float("-inf"))
        bad = torch.isnan(logits).any(dim=-1) | torch.isposinf(logits).any(dim=-1)
        self.bad.copy_(self.bad | (bad & self.active))
        chosen = torch.where(self.active, logits.argmax(dim=-1), self.pad)
        self.out.index_copy_(1, self.col, chosen[:, None])
        self.col.copy_((self.col + 1) % self.chunk)
        count = self.count + self.active.long()
        done = torch.isin(chosen, self.eos_t) | (count >= self.limit)
        self.count.copy_(count)
        self.pos.copy_(torch.where(self.active, self.pos + 1, self.pos))
        self.tokens.copy_(torch.where(self.active, chosen, self.tokens))
        self.active.copy_(self.active & ~done)

    @torch.no_grad()
    def _build(self) -> None:
        """On CUDA: compile (optionally) and capture the step as a CUDA graph, with all rows idle."""
        self._built = True
        if not self.graphs:
            return
        began = time.perf_counter()
        self.active.zero_()
        step: Callable[[], None] = self._eager_step
        if self.compile:
            try:
                step = torch.compile(self._eager_step, fullgraph=True, dynamic=False)
                self._warm(step)
            except Exception as exc:  # a compiler failure must not stop decoding: fall back to eager kernels
                self.stats.fallback = f"torch.compile failed, eager kernels: {type(exc).__name__}: {str(exc)[:200]}"
                step = self._eager_step
        self._warm(step)
        eager = step == self._eager_step  # bound methods: equal, never identical
        for candidate, compiled in dict.fromkeys(((step, not eager), (self._eager_step, False))):
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    candidate()
            except Exception as exc:  # capture refused: try the eager kernels, then run without a graph
                self.stats.fallback += f"; CUDA graph capture failed: {type(exc).__name__}: {str(exc)[:200]}"
                torch.cuda.synchronize(self.device)
                continue
            self._step = graph.replay
            self.stats.step_mode = "compile+graph" if compiled else "graph"
            break
        self.col.zero_()
        torch.cuda.synchronize(self.device)
        self.stats.compile_s += time.perf_counter() - began

    def _warm(self, step: Callable[[], None]) -> None:
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)

    # -- prefill and admission -------------------------------------------------------------------

    @torch.no_grad()
    def _prefill(self, request: Request) -> _Staged:
        model = self.model
        began = time.perf_counter()
        vision_dtype = next(model.vision_tower.parameters()).dtype
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in request.inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(vision_dtype)
        input_ids = inputs["input_ids"]
        if input_ids.shape[0] != 1:
            raise ValueError(f"a request holds one page, got input_ids of shape {tuple(input_ids.shape)}")
        prompt = input_ids.shape[1]
        if prompt + request.max_new_tokens - 1 > self.cache_len:
            raise ValueError(
                f"a {prompt}-token prompt with {request.max_new_tokens} new tokens needs more than "
                f"the cache's {self.cache_len} positions"
            )
        embeds = model.embed_with_images(input_ids, inputs.get("pixel_values"), inputs.get("image_grid_thw"))
        cache = DynamicCache(config=model.config)
        hidden = model.model(
            inputs_embeds=embeds,
            attention_mask=inputs.get("attention_mask"),
            position_ids=torch.arange(prompt, device=self.device)[None],
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state
        logits = model.lm_head(hidden[:, -1:])[:, -1].float()
        if request.min_new_tokens > 0:
            logits = logits.masked_fill(self.eos_mask[None, :], float("-inf"))
        bad = torch.isnan(logits).any(dim=-1) | torch.isposinf(logits).any(dim=-1)
        layers = cache.layers[: self.layers]
        staged = _Staged(
            request,
            [layer.keys for layer in layers],
            [layer.values for layer in layers],
            logits.argmax(dim=-1),
            bad,
            prompt,
            began,
        )
        if self.device.type == "cuda":
            staged.ready = torch.cuda.Event()
            staged.ready.record()
        self.stats.prefills += 1
        return staged

    def _prefill_ahead(self, request: Request) -> _Staged:
        # The side stream needs nothing the decoding steps write (weights and masks are fixed), so it
        # does not wait for them: that is the overlap. Its allocations come from its own pool.
        assert self._side is not None
        with torch.cuda.stream(self._side):
            return self._prefill(request)

    def _admit(self, row: int, staged: _Staged) -> _Row:
        main = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        if staged.ready is not None and main is not None:
            main.wait_event(staged.ready)
        prompt = staged.prompt_tokens
        for i in range(self.layers):
            self.k[i][row, :, :prompt].copy_(staged.keys[i][0])
            self.v[i][row, :, :prompt].copy_(staged.values[i][0])
            if main is not None and self._side is not None:  # made on the side stream, read on this one
                staged.keys[i].record_stream(main)
                staged.values[i].record_stream(main)
        request = staged.request
        first = staged.first
        self.tokens[row] = first[0]
        self.pos[row] = prompt
        self.count[row] = 1
        self.limit[row] = request.max_new_tokens
        self.min_len[row] = request.min_new_tokens
        self.bad[row] = staged.bad[0]
        self.active[row] = ~torch.isin(first, self.eos_t)[0] & (request.max_new_tokens > 1)
        if main is not None and self._side is not None:
            first.record_stream(main)
            staged.bad.record_stream(main)
        staged.keys, staged.values = [], []
        return _Row(staged)

    # -- the loop --------------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, requests: Iterable[Request], on_finish: Callable[[Finished], None] | None = None) -> list[Finished]:
        """Decode every request (pulled lazily, when a row or the look-ahead has room); results in
        the order pages finished, each with its key."""
        if not self._built:
            self._build()
        if self._side is not None:
            self._side.wait_stream(torch.cuda.current_stream(self.device))
        pending = _Pending(requests)
        staged: deque[_Staged] = deque()
        rows: dict[int, _Row] = {}
        finished: list[Finished] = []
        self.active.zero_()
        self.col.zero_()
        while pending or staged or rows:
            free = [r for r in range(self.slots) if r not in rows]
            if self.refill == "continuous" or not rows:
                for row in free:
                    if not (staged or pending):
                        break
                    began = time.perf_counter()
                    item = staged.popleft() if staged else self._prefill(pending.popleft())
                    rows[row] = self._admit(row, item)
                    self.stats.prefill_s += time.perf_counter() - began
            began = time.perf_counter()
            for _ in range(self.chunk):
                self._step()
            self.stats.steps += self.chunk
            self.stats.chunks += 1
            if self.overlap:
                while pending and len(staged) < self.lookahead:
                    staged.append(self._prefill_ahead(pending.popleft()))
            out, count, active, bad = self._read()
            self.stats.decode_s += time.perf_counter() - began
            now = time.perf_counter()
            for row, state in list(rows.items()):
                new = count[row] - state.count
                if new > 0:
                    state.tokens.extend(out[row][:new])
                    state.count = count[row]
                timeout = state.staged.request.timeout
                if active[row] and timeout is not None and now - state.staged.began > timeout:
                    self.active[row] = False
                    state.timed_out = True
                    active[row] = False
                if active[row] and self.loop_check is not None and len(state.tokens) - state.checked >= self.loop_every:
                    # The loop stop of engines/vlm.py at a chunk boundary: a row whose tail repeats ends now.
                    state.checked = len(state.tokens)
                    state.loop = self.loop_check([int(state.staged.first[0]), *state.tokens])
                    if state.loop is not None:
                        self.active[row] = False
                        active[row] = False
                if not active[row]:
                    done = self._finish(state, bad[row], now)
                    finished.append(done)
                    if on_finish is not None:
                        on_finish(done)
                    del rows[row]
        return finished

    def _read(self) -> tuple[list[list[int]], list[int], list[bool], list[bool]]:
        names = ("out", "count", "active", "bad")
        if self.device.type != "cuda":
            return tuple(getattr(self, name).tolist() for name in names)
        for name in names:
            self._host[name].copy_(getattr(self, name), non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        event.synchronize()
        return tuple(self._host[name].tolist() for name in names)

    def _finish(self, state: _Row, bad: bool, now: float) -> Finished:
        staged = state.staged
        first = int(staged.first[0])
        tokens = [first, *state.tokens]
        if state.timed_out:
            stop = "timeout"
        elif state.loop is not None:
            stop = "loop"
        elif tokens[-1] in self.eos:
            stop = "eos"
        else:
            stop = "max_tokens"
        return Finished(
            staged.request.key, tokens, stop, staged.prompt_tokens, bool(bad), now - staged.began, state.loop
        )
