"""Hugging Face Space entry point: the hf_vit_rollout Gradio app on the shipped demo model.

Run it locally with ``python space/app.py`` (or ``hf-vit-rollout app``); ``python
scripts/make_space.py OUT`` assembles a folder that a Space runs as is.
"""

from hf_vit_rollout.app import build_app, launch_kwargs

demo = build_app("demo")

if __name__ == "__main__":
    demo.launch(**launch_kwargs())
