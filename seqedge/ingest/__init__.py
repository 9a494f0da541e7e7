"""Where models come from, besides seqedge's own checkpoints: local Hugging Face folders (`hf.py`)."""
