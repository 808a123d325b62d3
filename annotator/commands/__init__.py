"""The headless commands of `annotator`, one module each (`find_heads`, `prelabel_command`, `evaluate`, `models`),
with what their parsers share (`options`) and what they share when they run (`runtime`); `annotator.cli`
dispatches to them."""
