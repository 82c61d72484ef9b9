"""The rule every chapter's manifest templates follow: each field line carries a comment (tests share it)."""

from __future__ import annotations

from pathlib import Path


def uncommented_fields(folder: Path, pattern: str = "*.yaml.j2") -> list[str]:
    """Field lines without a comment on them or just above, as "file:line: text".

    Exempt: block openers (`labels:`), list items (their `# why` sits above), and the label/tag lines that
    loops generate from data (`{{ key }}: ...`) or that follow a Jinja statement.
    """
    uncommented = []
    for template in sorted(folder.rglob(pattern)):
        previous = ""
        for number, line in enumerate(template.read_text().splitlines(), start=1):
            text = line.strip()
            is_field = ":" in text and not text.startswith(("#", "{%", "{#", "{{", "---", "- "))
            exempt = text.endswith(":") or "{{ key }}" in text or previous.startswith(("#", "{%"))
            if is_field and "#" not in text and not exempt:
                uncommented.append(f"{template.name}:{number}: {text}")
            previous = text
    return uncommented
