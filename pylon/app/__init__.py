"""``pylon view``: a local web app for runs, benchmarks and new images (the ``[app]`` extra).

Layering: the top of the pipeline below the command line; it reads what evaluation, the
benchmark and prediction wrote, and runs the model only to render a case or a new image.
"""
