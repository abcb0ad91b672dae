"""The synthetic glioma cohort: anatomy, growth, treatment, MR contrast, native space, reports.

`cohort.make_cohort` writes a BraTS-style cohort; `patient.simulate_course` runs the model
without images (fast, for statistics).
"""
