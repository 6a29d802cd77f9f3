"""Every default value that more than one layer uses, in one place.

`config.py` builds the typed configuration on these; the CLI, the Python API, the server and the
engines read them from here rather than repeating the numbers.
"""

from __future__ import annotations

# Languages assumed when the user names none: the development set is English and Russian.
LANGUAGES: tuple[str, ...] = ("eng", "rus")

# Token limit per page for generative engines. dots.ocr's published generation config allows long
# pages (a dense A4 page in its JSON layout runs to several thousand tokens); a model whose context is
# shorter caps it with its own budget (engines/hf/*.py `max_context`).
MAX_NEW_TOKENS = 16384

# Pixels per input page that the loader accepts before refusing the page as a decompression bomb.
INPUT_MAX_PIXELS = 150_000_000

# The largest page a VLM's processor takes by default: dots.ocr's published preprocessor
# (max_pixels 11,289,600 in preprocessor_config.json); engines with a smaller cap say so.
VLM_MAX_PIXELS = 11_289_600

# Pages rendered from PDFs at this resolution unless the user says otherwise.
DPI = 200

# Pages per PDF or TIFF accepted unless the user raises the limit.
MAX_PAGES = 1000

# Pages offered to the chain together (engine-major): enough to batch on a GPU, few enough that a
# long document streams.
WINDOW_PAGES = 16
