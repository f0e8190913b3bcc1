"""A PIL stand-in for the few torchvision transforms the guide's scripts use.

Only put on sys.path by bench/_launch.py when the real torchvision cannot be imported (PyPI's build
beside a +cpu torch). Same semantics for what the scripts call; not a general replacement.
"""
__version__ = "0.0-bench-shim"
