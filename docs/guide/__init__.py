"""The fedclf guide: chapters whose figures and tables a build regenerates.

`python -m docs.guide.build` runs every chapter's steps (fedclf binaries as
subprocesses, or the library) and renders `templates/NN-*.md` into
`NN-*.md`, filling each `{{ include ... }}` with a generated output.
"""
