"""`tumor report`: a study report with overlays, volumes, trends and a checked narrative.

inputs.py finds the patient's sessions, facts.py and location.py measure them, narrative.py
words the template narrative, llm.py asks an optional language model and checks its text,
plots.py draws the figures, html.py renders the page, study.py runs one patient end to end.
"""
