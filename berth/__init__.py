"""berth: a container engine.

Imports only point down: cli -> container/image -> runtime/snapshot/layer/content -> linux/oci -> errors.
Nothing here is imported eagerly; the CLI's hot path pays only for what it uses.
"""

__version__ = "0.1.0"
