"""What every benchmark does with its result lines: write them as Markdown under a dated title (--out)."""

from datetime import UTC, datetime
from pathlib import Path


def write_results(out: Path, title: str, lines: list[str], detail: str = "") -> None:
    """`# title (YYYY-MM-DD HH:MM UTC[, detail])`, a blank line, then the lines."""
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC" + (f", {detail}" if detail else "")
    out.write_text(f"# {title} ({stamp})\n\n" + "\n".join(lines) + "\n")
