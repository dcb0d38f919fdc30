"""Hugging Face Hub: search, quant groups, fit before download, downloads into the HF cache."""
