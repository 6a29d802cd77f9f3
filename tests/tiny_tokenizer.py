"""A small byte-level BPE tokenizer trained in the test session, standing in for a model's own.

Real checkpoints cannot be downloaded here, so VLM tests train one of these with the model's special
tokens and save it next to a tiny random-weight model in the published directory layout.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    '{"bbox": [10, 20, 300, 400], "category": "Text", "text": "Hello world"}',
    "<table><tr><td>1</td><td>2</td></tr></table> $$E = mc^2$$ # Title ## Section",
    "Please output the layout information from the PDF image. Extract the text content.",
    "OCR: page header footer caption footnote formula list-item picture section-header table title",
]


def train_tokenizer(
    special_tokens: Sequence[str],
    *,
    vocab_size: int = 400,
    eos_token: str | None = None,
    pad_token: str | None = None,
    chat_template: str | None = None,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on a tiny bilingual corpus; special tokens get the first ids in order."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=eos_token,
        pad_token=pad_token or eos_token,
        additional_special_tokens=[t for t in special_tokens if t not in (eos_token, pad_token)],
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast
