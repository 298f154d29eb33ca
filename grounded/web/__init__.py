"""The web front end's logic without Gradio widgets: ``service.py`` (sessions, requests, downloads),
``gradio_patches.py`` (workarounds for bugs in specific Gradio releases), ``spaces.py`` (optional
``spaces.GPU`` on Hugging Face Spaces). ``app.py`` at the repository root wires them to Gradio."""
