"""The consoles the `rr` command prints with."""

from __future__ import annotations

from rich.console import Console, ConsoleDimensions

# Piped output has no width to fit: rich's fallback (80 columns) would wrap every
# table cell. Lines this long are never reached; tables keep their natural width.
PIPED_WIDTH = 100_000


class Output(Console):
    """A rich Console that, writing to something other than a terminal without
    COLUMNS set (`rr audit | grep …`, a CI log), does not squeeze tables to 80
    columns. A terminal, COLUMNS or an explicit width decide as usual."""

    def __init__(self, *args, width: int | None = None, **kwargs) -> None:
        super().__init__(*args, width=width, **kwargs)
        if width is None:
            # rich fixes the width from COLUMNS when the console is made (at import): read it
            # when printing instead, so the COLUMNS of each run (and of each test) counts
            self._width = None

    def _get_size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._width is None and not self.is_terminal and not self._environ.get("COLUMNS"):
            return ConsoleDimensions(PIPED_WIDTH, size.height)
        return size

    size = property(_get_size, Console.size.fset)  # type: ignore[assignment]
