"""ovseg's Python tooling: export/, reference/, recipe/ and what they share (tools/README.md)."""
