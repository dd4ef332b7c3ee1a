"""`python -m services.documents`: the documents worker."""

from services.documents.servicer import build
from services.documents.settings import DocumentsSettings
from services.runtime.worker import run_worker

# The conversion children start from a forkserver, which imports the main module as __mp_main__: only the
# process started as the worker serves.
if __name__ == "__main__":
    run_worker(build, DocumentsSettings)
