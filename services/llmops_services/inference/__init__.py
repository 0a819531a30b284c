"""The Inference service: Generate and StreamGenerate over one engine interface."""
