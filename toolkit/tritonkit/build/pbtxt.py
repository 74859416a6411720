"""config.pbtxt through Triton's own protobuf schema — rendering and parsing, nothing else.

Rendering uses ``text_format`` only (never string templates), so output is deterministic and
always parseable by Triton. ``max_batch_size: 0`` is written explicitly where meant, because
proto3 text format drops zero scalars and a reader should not have to know that.

Example:
    >>> config = parse(Path("dist/demo/classifier/config.pbtxt").read_text())
    >>> config.max_batch_size
    32
"""

from __future__ import annotations

from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig


class PbtxtError(ValueError):
    """A config.pbtxt that does not parse; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int | None, column: int | None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


def render(config: ModelConfig) -> str:
    """Render a ModelConfig as config.pbtxt text (deterministic, trailing newline)."""
    text = text_format.MessageToString(config, as_utf8=True)
    if config.max_batch_size == 0:
        # Right after the name, where a non-zero max_batch_size would be rendered.
        lines = text.splitlines()
        at = next((i + 1 for i, line in enumerate(lines) if line.startswith("name:")), 0)
        lines.insert(at, "max_batch_size: 0")
        text = "\n".join(lines) + "\n"
    return text


def parse(text: str) -> ModelConfig:
    """Parse config.pbtxt text against the schema.

    Raises:
        PbtxtError: with the parser's line and column when the text is not a valid ModelConfig.
    """
    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        message = str(exc)
        prefix = f"{line}:{column} : "
        message = message.removeprefix(prefix)
        raise PbtxtError(message, line, column) from exc
    return config
