"""Training: one step per method (step.py), the per-worker loop (loop.py), where it runs (session.py).

Ray is imported inside functions only: by the Ray Train driver (fit.py) and the Ray session (session.py's
``RaySession``), never here. Connecting to Ray is :mod:`phasegan_hpc.cluster`'s.
"""
