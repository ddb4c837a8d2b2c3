"""MAEST tools: tagging, conversion, fine-tuning, probing, export and music-library helpers."""
