"""The tool catalog: which upstream servers exist and which of their tools agents may see."""

from gateway.catalog.loader import CatalogError, CatalogProblem, load_catalog
from gateway.catalog.model import Catalog, HttpTransport, ServerEntry, StdioTransport, ToolEntry

__all__ = [
    "Catalog",
    "CatalogError",
    "CatalogProblem",
    "HttpTransport",
    "ServerEntry",
    "StdioTransport",
    "ToolEntry",
    "load_catalog",
]
