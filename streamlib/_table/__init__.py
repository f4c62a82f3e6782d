"""Tables: the latest value per key of a stream, their change streams, and joins with them."""

from .change import Change
from .table import Table
from .view import TableView

__all__ = ["Change", "Table", "TableView"]
