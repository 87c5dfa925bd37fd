"""The vision stage: preprocess a part's views, find and name defects, render overlays.

``inspector.build_inspector(loaded_recipe, models_dir)`` is the entry point the pipeline uses.
"""
