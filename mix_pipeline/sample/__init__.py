"""The demo's sample corpus, with planted defects and its ground truth, and the scoring of a run's
filters against that ground truth. Test and demo fixtures, not the pipeline: nothing in `core`
imports this package."""
