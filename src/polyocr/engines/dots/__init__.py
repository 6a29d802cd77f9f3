"""Native dots.ocr: the published checkpoint run by polyocr's own model code, without remote code.

Submodules are imported where they are used (config, vision and model need torch and transformers),
so importing this package stays cheap for `polyocr engines` and the registry.
"""
