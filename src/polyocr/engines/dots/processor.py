"""Pages to model inputs for dots.ocr, and model outputs back to text.

The pixel layout is the one transformers' Qwen2VLImageProcessor produces when configured as the
checkpoint's preprocessor_config.json says (patch 14, merge 2, temporal patch 1, CLIP mean/std): we
compute it here with numpy so that it does not depend on which image-processor backend (torchvision
or PIL) a given transformers release picks, and a test pins it against that class.

Prompts are rendered with the checkpoint's own chat template. Its user turn is rendered from string
content, `<|img|><|imgpad|><|endofimg|>` followed by the prompt, which is what the reference's vLLM
path sends: both templates the checkpoint ships (tokenizer_config.json and chat_template.json) then
give `<|user|>...<|endofuser|><|assistant|>`, the framing the model was trained on. The list-content
branch of chat_template.json drops `<|user|>`/`<|endofuser|>` and adds a leading space, so it is not
used. The single `<|imgpad|>` is then expanded to the image's token count.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from polyocr.engines import vlm
from polyocr.errors import EngineError

if TYPE_CHECKING:  # torch is needed only to build model inputs; resizing and prompts work without it
    import torch

PATCH_SIZE = 14
MERGE_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE  # both sides of the resized page are multiples of this
MIN_PIXELS = 3136
MAX_PIXELS = 11289600
MAX_ASPECT_RATIO = 200
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
PATCH_DIM = 3 * PATCH_SIZE * PATCH_SIZE

IMAGE_TOKEN = "<|imgpad|>"
IMAGE_START = "<|img|>"
IMAGE_END = "<|endofimg|>"
USER_START, USER_END, ASSISTANT_START = "<|user|>", "<|endofuser|>", "<|assistant|>"
END_TOKENS = ("<|endoftext|>", "<|endofassistant|>")  # generation_config.json's eos_token_id


def smart_resize(
    height: int, width: int, *, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS, factor: int = FACTOR
) -> tuple[int, int]:
    """The (height, width) the model sees: multiples of `factor`, area within [min_pixels, max_pixels].

    The reference's rule (dots_ocr/utils/image_utils.py): round each side to the nearest multiple;
    above the maximum scale both sides down by sqrt(area/max) and floor; below the minimum scale up
    by sqrt(min/area) and ceil, then re-apply the maximum. Sides never drop below one merge window,
    which keeps thin strips (a 10 x 2000 line) valid where transformers' copy would give 0.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels {min_pixels} is above max_pixels {max_pixels}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"aspect ratio {max(height, width) / min(height, width):.0f}:1 of a {width}x{height} image is above "
            f"the {MAX_ASPECT_RATIO}:1 dots.ocr accepts; crop the image first"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
        if h_bar * w_bar > max_pixels:
            beta = math.sqrt(h_bar * w_bar / max_pixels)
            h_bar = max(factor, math.floor(h_bar / beta / factor) * factor)
            w_bar = max(factor, math.floor(w_bar / beta / factor) * factor)
    return h_bar, w_bar


def image_token_count(resized_height: int, resized_width: int) -> int:
    """`<|imgpad|>` tokens for a resized image: one per 2x2 group of 14-pixel patches."""
    return (resized_height // PATCH_SIZE) * (resized_width // PATCH_SIZE) // (MERGE_SIZE * MERGE_SIZE)


def patchify(pixels: np.ndarray) -> np.ndarray:
    """(3, H, W) float32 -> (H/14 * W/14, 588) rows in 2x2 merge-window order.

    Rows go window by window in raster order of the windows, and inside a window top-left,
    top-right, bottom-left, bottom-right: the order the vision tower's merger and its rotary
    row/column ids assume. Each row is channel-major (c, py, px), the Conv2d weight's layout.
    """
    channels, height, width = pixels.shape
    gh, gw = height // PATCH_SIZE, width // PATCH_SIZE
    if gh % MERGE_SIZE or gw % MERGE_SIZE or gh * PATCH_SIZE != height or gw * PATCH_SIZE != width:
        raise ValueError(f"image {width}x{height} is not a multiple of {FACTOR} on both sides")
    patches = pixels.reshape(
        channels, gh // MERGE_SIZE, MERGE_SIZE, PATCH_SIZE, gw // MERGE_SIZE, MERGE_SIZE, PATCH_SIZE
    )
    patches = patches.transpose(1, 4, 2, 5, 0, 3, 6)  # (wh, ww, mh, mw, c, py, px)
    return np.ascontiguousarray(patches.reshape(gh * gw, channels * PATCH_SIZE * PATCH_SIZE))


@dataclass
class PreparedImage:
    """One page as the model sees it, with what is needed to map its boxes back."""

    pixel_values: np.ndarray  # (patches, 588) float32
    grid_thw: tuple[int, int, int]  # (1, H/14, W/14)
    original_size: tuple[int, int]  # (width, height) of the page as loaded
    resized_size: tuple[int, int]  # (width, height) fed to the model

    @property
    def token_count(self) -> int:
        return image_token_count(self.resized_size[1], self.resized_size[0])

    def to_model(self, x: float, y: float) -> tuple[float, float]:
        """A point on the original page in the resized image's pixels."""
        return x * self.resized_size[0] / self.original_size[0], y * self.resized_size[1] / self.original_size[1]

    def to_page(self, x: float, y: float) -> tuple[float, float]:
        """A point in the resized image's pixels on the original page."""
        return x * self.original_size[0] / self.resized_size[0], y * self.original_size[1] / self.resized_size[1]


def prepare_image(image: Image.Image, *, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> PreparedImage:
    """Resize (bicubic, as the reference and Qwen2VLImageProcessor do), rescale, normalise, patchify."""
    rgb = image.convert("RGB")
    height, width = smart_resize(rgb.height, rgb.width, min_pixels=min_pixels, max_pixels=max_pixels)
    if (width, height) != rgb.size:
        rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) * np.float32(1 / 255)
    mean = np.asarray(IMAGE_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(IMAGE_STD, dtype=np.float32)[:, None, None]
    pixels = (pixels - mean) / std
    return PreparedImage(
        pixel_values=patchify(pixels),
        grid_thw=(1, height // PATCH_SIZE, width // PATCH_SIZE),
        original_size=image.size,
        resized_size=(width, height),
    )


@dataclass
class DotsBatch:
    """Model inputs for a batch of pages, left-padded so every prompt ends where generation starts."""

    input_ids: torch.Tensor  # (batch, length) long
    attention_mask: torch.Tensor  # (batch, length) long, 0 on padding
    pixel_values: torch.Tensor  # (total patches, 588) float32, images in batch order
    image_grid_thw: torch.Tensor  # (batch, 3) long
    images: list[PreparedImage]
    prompt_lengths: list[int]  # unpadded prompt length of each page

    def model_inputs(self, device: str | torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids.to(device),
            "attention_mask": self.attention_mask.to(device),
            "pixel_values": self.pixel_values.to(device=device, dtype=dtype),
            "image_grid_thw": self.image_grid_thw.to(device),
        }


class DotsProcessor:
    """Builds prompts with the checkpoint's tokenizer and template, and batches pages for generate()."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        chat_template: str | None = None,
        min_pixels: int = MIN_PIXELS,
        max_pixels: int = MAX_PIXELS,
        eos_token_ids: Sequence[int] | None = None,
        source: str = "dots.ocr checkpoint",
        end_tokens: Sequence[str] | None = None,
    ):
        if min_pixels > max_pixels:
            raise ValueError(f"min_pixels {min_pixels} is above max_pixels {max_pixels}")
        self.tokenizer = tokenizer
        self.chat_template = chat_template or tokenizer.chat_template
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.source = source
        if self.chat_template is None:
            raise EngineError("dots", f"{source}: no chat template (tokenizer_config.json or chat_template.json)")
        ids = {
            token: tokenizer.convert_tokens_to_ids(token)
            for token in (IMAGE_TOKEN, IMAGE_START, IMAGE_END, USER_START, USER_END, ASSISTANT_START, *END_TOKENS)
        }
        missing = [token for token, i in ids.items() if i is None or i == tokenizer.unk_token_id]
        if missing:
            raise EngineError("dots", f"{source}: tokenizer lacks the special tokens {', '.join(missing)}")
        self.token_ids = ids
        self.image_token_id: int = ids[IMAGE_TOKEN]
        # The checkpoint's generation_config.json eos ids; without that file, these end tokens' ids.
        fallback = [ids[t] if t in ids else tokenizer.convert_tokens_to_ids(t) for t in (end_tokens or END_TOKENS)]
        self.eos_token_ids = list(eos_token_ids) if eos_token_ids else fallback
        self.pad_token_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[0]

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        end_tokens: Sequence[str] | None = None,
    ) -> DotsProcessor:
        """The processor of a checkpoint directory; pixel limits default to its preprocessor_config.json."""
        from transformers import PreTrainedTokenizerFast

        root = Path(path)
        # tokenizer.json defines the tokenizer completely; AutoTokenizer would also consult config.json,
        # whose auto_map points at the checkpoint's remote code.
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(root))
        preprocessor = _read_json(root / "preprocessor_config.json")
        generation = _read_json(root / "generation_config.json")
        template = tokenizer.chat_template or _read_json(root / "chat_template.json").get("chat_template")
        eos = generation.get("eos_token_id")
        size = preprocessor.get("size") or {}
        return cls(
            tokenizer,
            chat_template=template,
            min_pixels=min_pixels or preprocessor.get("min_pixels") or size.get("shortest_edge") or MIN_PIXELS,
            max_pixels=max_pixels or preprocessor.get("max_pixels") or size.get("longest_edge") or MAX_PIXELS,
            eos_token_ids=[eos] if isinstance(eos, int) else eos,
            source=str(root),
            end_tokens=end_tokens,
        )

    def prompt_ids(self, prompt: str, image_tokens: int) -> list[int]:
        """Token ids of one user turn: the image (with `image_tokens` pads), then the prompt text."""
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": f"{IMAGE_START}{IMAGE_TOKEN}{IMAGE_END}{prompt}"}],
            chat_template=self.chat_template,
            tokenize=False,
            add_generation_prompt=True,
        )
        ids = self.tokenizer.encode(rendered, add_special_tokens=False)
        t = self.token_ids
        if (
            ids[:1] != [t[USER_START]]
            or ids[-2:] != [t[USER_END], t[ASSISTANT_START]]
            or ids.count(self.image_token_id) != 1
        ):
            raise EngineError(
                "dots",
                f"{self.source}: its chat template renders {rendered[:80]!r}..., not the "
                f"{USER_START}{IMAGE_START}{IMAGE_TOKEN}{IMAGE_END}...{USER_END}{ASSISTANT_START} framing "
                "the model was trained on",
            )
        at = ids.index(self.image_token_id)
        return ids[:at] + [self.image_token_id] * image_tokens + ids[at + 1 :]

    def prepare(self, image: Image.Image) -> PreparedImage:
        return prepare_image(image, min_pixels=self.min_pixels, max_pixels=self.max_pixels)

    def shape(self, image: Image.Image) -> PreparedImage:
        """What `prepare` would give, without the pixels (sizes, grid, token count): cheap."""
        height, width = smart_resize(image.height, image.width, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return PreparedImage(
            pixel_values=np.empty((0, PATCH_DIM), dtype=np.float32),
            grid_thw=(1, height // PATCH_SIZE, width // PATCH_SIZE),
            original_size=image.size,
            resized_size=(width, height),
        )

    def batch(self, images: Sequence[PreparedImage], prompts: Sequence[str]) -> DotsBatch:
        """Inputs for generate(); padding goes on the left so all prompts end at the same position."""
        if len(images) != len(prompts) or not images:
            raise ValueError(f"need one prompt per image, got {len(images)} images and {len(prompts)} prompts")
        import torch

        sequences = [self.prompt_ids(p, im.token_count) for im, p in zip(images, prompts, strict=True)]
        input_ids, attention_mask = vlm.left_pad(sequences, self.pad_token_id)
        return DotsBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=torch.from_numpy(np.concatenate([im.pixel_values for im in images])),
            image_grid_thw=torch.tensor([im.grid_thw for im in images], dtype=torch.long),
            images=list(images),
            prompt_lengths=[len(s) for s in sequences],
        )

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineError("dots", f"{path}: unreadable ({exc})") from exc
    return data if isinstance(data, dict) else {}
