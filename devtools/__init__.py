"""Development tools: demo-data generation, image statistics, the notebook's analysis and display helpers.

Never installed (pyproject's packages.find leaves it out) and never imported by the product (embed/,
classifiers/, service/); the notebook, the benches, the tests and ``make demo`` use it from a checkout.
"""
