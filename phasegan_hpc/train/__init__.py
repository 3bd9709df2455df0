"""Training: one step per method (step.py), the per-worker loop (loop.py), where it runs (session.py).

Ray is imported only by the Ray driver (fit.py), never here.
"""
