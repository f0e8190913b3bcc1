"""The LoRA Studio web interface's server side, without ComfyUI: job listing and records, dataset uploads.

    jobs.py      job records → summaries for the table, visibility by user, files a job may serve
    uploads.py   a streamed upload → a checked dataset in the input folder, who uploaded what, deletion

`nodes/routes.py` turns these into aiohttp routes; anything that needs ComfyUI (the queue, the user of a
request, interrupting) is passed in by it, so this package is tested without a server.
"""
from .errors import StudioError
from .jobs import JobStore, Viewer
from .uploads import DatasetStore

__all__ = ["StudioError", "JobStore", "Viewer", "DatasetStore"]
