"""Importers of public routing tables (LLMRouter/RouterDC, RouterBench, RouteLLM) into records.

Each gives an ``ImportResult`` (records with tool "none" plus counts matching the source);
``import_into(result, out_dir)`` appends them to a RecordStore, which skips rows it already holds.
"""

from atlas_router.records.importers.common import ImportFormatError, ImportResult, import_into
from atlas_router.records.importers.llmrouter import read_llmrouter
from atlas_router.records.importers.routellm import read_routellm
from atlas_router.records.importers.routerbench import read_routerbench

__all__ = ["ImportFormatError", "ImportResult", "import_into", "read_llmrouter", "read_routellm", "read_routerbench"]
