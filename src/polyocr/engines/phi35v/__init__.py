"""Phi-3.5-Vision (microsoft/Phi-3.5-vision-instruct) run natively: config, model, processor, engine."""
