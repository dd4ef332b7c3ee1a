"""The documents worker: files converted with Docling and chunked by the served embedding model's tokenizer."""
