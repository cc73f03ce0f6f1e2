"""`python -m bmsbus.collector.protocols.aiobmsble_adapter`: print the generated docs tables."""

from .mapping import mapping_table_markdown
from .plugins import types_table_markdown

print(types_table_markdown())
print()
print(mapping_table_markdown())
