"""dynaprag: dynamic and parametric retrieval-augmented generation on white-box transformer signals.

Three orthogonal axes around one decoding loop: *when* to retrieve (a Trigger), *what* to
retrieve (a QueryFormulator) and *how* knowledge enters the model (an Injector).
"""
__version__ = "0.1.0"
