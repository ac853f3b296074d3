"""Project documentation that runs: `python -m docs.guide.build`."""
