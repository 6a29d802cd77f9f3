"""The transformers-native VLM engines: one shared engine (engine.py), one module per model."""
