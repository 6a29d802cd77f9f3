"""OCR engines behind one interface; see base.py for the interface and the registry."""
