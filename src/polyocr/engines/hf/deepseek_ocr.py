"""DeepSeek-OCR-2: the spec, its prompts, its tiles and its grounding parser."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from polyocr.engines import vlm
from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.spec import ALL_ATTENTION, WITHOUT_FLASH, Size, VLMSpec, category, scale_box
from polyocr.results import Block, TextFormat
from polyocr.scripts import ARABIC, CYRILLIC, GREEK, HAN, HANGUL, KANA, LATIN

_DEEPSEEK_REF = re.compile(r"<\|ref\|>(?P<label>.*?)<\|/ref\|><\|det\|>(?P<boxes>.*?)<\|/det\|>", re.S)


def parse_deepseek_grounding(output: str, size: Size) -> list[Block]:
    """DeepSeek-OCR grounding: <|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|> then the
    block's Markdown; coordinates are relative, 0..999. Several boxes for one label are united."""
    matches = list(_DEEPSEEK_REF.finditer(output))
    blocks = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(output)
        numbers = [int(v) for v in re.findall(r"\d+", m["boxes"])]
        if len(numbers) < 4:
            continue
        quads = [numbers[j : j + 4] for j in range(0, len(numbers) - 3, 4)]
        box = [min(q[0] for q in quads), min(q[1] for q in quads), max(q[2] for q in quads), max(q[3] for q in quads)]
        label = category(m["label"])
        text = output[m.end() : end].strip()
        fmt = TextFormat.LATEX if label == "Formula" else TextFormat.MARKDOWN
        blocks.append(Block(bbox=scale_box(box, size, 999), category=label, text=text, format=fmt))
    return blocks


# The authors' decoding (deepseek-ai/DeepSeek-OCR-2, DeepSeek-OCR2-vllm/run_dpsk_ocr2_image.py):
# greedy, max_model_len=8192 (prompt and answer together), and
# NoRepeatNGramLogitsProcessor(ngram_size=20, window_size=90, whitelist_token_ids={128821, 128822})
# "whitelist: <td>, </td>", so that table cells may repeat.
DEEPSEEK_CONTEXT = 8192
NGRAM_SIZE, NGRAM_WINDOW = 20, 90
NGRAM_WHITELIST = ("<td>", "</td>")


def windowed_no_repeat_ngram(
    prompt_length: int, ngram_size: int = NGRAM_SIZE, window: int = NGRAM_WINDOW, whitelist: Sequence[int] = ()
) -> Any:
    """DeepSeek-OCR's no-repeat-n-gram ban over a window, as a transformers LogitsProcessor.

    Over the last `window` generated tokens (the prompt is not searched: the authors' vLLM processor
    sees the output ids), every n-gram whose first n-1 tokens equal the current last n-1 tokens bans
    its last token, unless that token is whitelisted. Unlike transformers' no_repeat_ngram_size,
    which bans over the whole sequence, an n-gram further back than the window may recur. Vectorised
    over the batch (no host synchronisation per step).
    """
    import torch
    from transformers import LogitsProcessor

    allowed = torch.tensor(sorted(set(whitelist)), dtype=torch.long)

    class WindowedNoRepeatNGram(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            generated = input_ids[:, prompt_length:]
            if generated.shape[1] < ngram_size:
                return scores
            recent = generated[:, -window:]
            grams = recent.unfold(1, ngram_size, 1)  # [batch, grams, n]
            prefix = generated[:, -(ngram_size - 1) :]
            match = (grams[:, :, :-1] == prefix[:, None, :]).all(dim=-1)
            hits = torch.zeros(scores.shape, dtype=torch.int32, device=scores.device)
            hits.scatter_add_(1, grams[:, :, -1], match.to(torch.int32))
            banned = hits > 0
            if len(allowed):
                banned[:, allowed.to(scores.device)] = False
            return scores.masked_fill(banned, float("-inf"))

    return WindowedNoRepeatNGram()


def deepseek_processors(tokenizer: Any, prompt_length: int) -> list[Any]:
    vocab = tokenizer.get_vocab()
    whitelist = [vocab[t] for t in NGRAM_WHITELIST if t in vocab]
    return [windowed_no_repeat_ngram(prompt_length, whitelist=whitelist)]


def _deepseek_pixels(
    sizes: list[Size], min_pixels: int | None, max_pixels: int | None, own: Mapping[str, Any]
) -> dict[str, Any]:
    """DeepSeek-OCR-2 reads a 1024 px global view plus 2..6 tiles of 768 px (fixed by its learned queries)."""
    if max_pixels is None:
        return {}
    return {"max_patches": min(6, max(2, max_pixels // (768 * 768)))}


DEEPSEEK_OCR = VLMSpec(
    name="deepseek-ocr",
    repo_id="deepseek-community/DeepSeek-OCR-2",
    description="DeepSeek-OCR-2 (transformers native): free OCR, Markdown with grounded blocks",
    model_class="DeepseekOcr2ForConditionalGeneration",
    processor_class="DeepseekOcr2Processor",
    module="deepseek_ocr2",
    template="<image>\n{prompt}",
    prompts={
        "text": "Free OCR.",
        "markdown": "Convert the document to markdown.",
        "layout": "<|grounding|>Convert the document to markdown.",
    },
    # The SAM and Qwen2 vision encoders have no flash-attention path; the MoE decoder has.
    attention={"": WITHOUT_FLASH, "vision_config": WITHOUT_FLASH, "text_config": ALL_ATTENTION},
    stop_tokens=("<｜end▁of▁sentence｜>",),
    parse_layout=parse_deepseek_grounding,
    markdown_format=TextFormat.MARKDOWN,
    pixel_kwargs=_deepseek_pixels,
    scripts=frozenset({LATIN, CYRILLIC, HAN, KANA, HANGUL, GREEK, ARABIC}),
    notes=(
        "boxes are relative (0..999); a 1024 px global view plus 2..6 tiles of 768 px; the authors' "
        "windowed no-repeat-20-gram ban (window 90, table cells exempt); prompt and answer within 8,192 tokens; "
        "DeepSeek-OCR v1 (deepseek-ai/DeepSeek-OCR) is not supported: it needs remote code"
    ),
    logits_processors=deepseek_processors,
    context_length=DEEPSEEK_CONTEXT,
)

# DeepSeek-OCR v1 (deepseek-ai/DeepSeek-OCR) cannot be served natively: its vision encoder is SAM ViT-B
# plus CLIP ViT-L (`model.vision_model.transformer.layers.N.self_attn.qkv_proj`), while transformers'
# deepseek_ocr2 classes pair SAM with a Qwen2-style encoder with learnt queries (DeepseekOcr2VisionEncoder;
# no CLIP anywhere in models/deepseek_ocr2, checked in transformers 5.23.0 and the 5.24.0 wheel). A
# native DeepseekOcr (v1) port exists only in transformers' repository history
# (src/transformers/models/deepseek_ocr, convert_deepseek_ocr_weights_to_hf.py), in no release.
V1_REPO = "deepseek-ai/DeepSeek-OCR"
V1_FIX = f"use deepseek-ocr (DeepSeek-OCR-2): hf download {DEEPSEEK_OCR.repo_id}"
REMOTE_V2_REPO = "deepseek-ai/DeepSeek-OCR-2"


def remote_code_checkpoint(directory: Path) -> str:
    """Why a DeepSeek-OCR checkpoint in its remote-code layout cannot load here ('' for the native one)."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(config, dict):
        return ""
    archs = [str(a) for a in config.get("architectures") or []]
    code = " ".join(str(v) for v in (config.get("auto_map") or {}).values())
    if "DeepseekOCRForCausalLM" in archs or re.search(r"modeling_deepseekocr\.", code):
        return (
            f"{directory} is DeepSeek-OCR v1 ({V1_REPO}), which runs only with its remote code: its SAM + CLIP-L "
            "encoder has no native transformers class (deepseek_ocr2 pairs SAM with a Qwen2 encoder)"
        )
    if config.get("model_type") == "deepseek_vl_v2":
        return (
            f"{directory} is DeepSeek-OCR in its remote-code layout ({REMOTE_V2_REPO}); "
            f"the native classes load the converted {DEEPSEEK_OCR.repo_id}"
        )
    return ""


class DeepseekOcrEngine(HFVLMEngine):
    spec = DEEPSEEK_OCR

    def _weights(self, model_path: str | None) -> Path | None:
        found = super()._weights(model_path)
        return None if found is not None and remote_code_checkpoint(found) else found

    def _no_weights(self, model_path: str | None) -> tuple[str, str]:
        """A remote-code checkpoint (named, or the only one in the cache) is named with the fix."""
        candidates = [vlm.find_weights(model_path, self.spec.repo_id)] if model_path else []
        candidates += [] if model_path else [vlm.cached_snapshot(V1_REPO), vlm.cached_snapshot(REMOTE_V2_REPO)]
        for candidate in candidates:
            reason = remote_code_checkpoint(candidate) if candidate is not None else ""
            if reason:
                return reason, V1_FIX
        return super()._no_weights(model_path)
