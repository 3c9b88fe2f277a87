"""The apps: the Gradio chat demo (``anygen demo``) and batch generation (``anygen batch``).

They build a pipeline and call it; no model logic lives here.
"""
