"""Helpers for the target/defect/device tests: preset text, edited copies, a tiny target."""
from __future__ import annotations

from importlib import resources


def preset_text(name: str = "wse3") -> str:
    return (resources.files("wafercc.target") / "presets" / f"{name}.toml").read_text(encoding="utf-8")


def write_variant(tmp_path, old: str, new: str, name: str = "variant.toml", base: str = "wse3") -> str:
    text = preset_text(base)
    assert old in text, old
    p = tmp_path / name
    p.write_text(text.replace(old, new, 1), encoding="utf-8")
    return str(p)


def tiny_target(tmp_path, width: int = 27, height: int = 22, die_cols: int = 3, die_rows: int = 2):
    """A wse3-shaped target with a small fabric (usable (width-7) x (height-2)) for brute-force checks."""
    from wafercc.target import load_target

    text = preset_text("wse3")
    text = text.replace("value = 762,", f"value = {width},").replace("value = 1172,", f"value = {height},")
    text = text.replace('columns = { value = 12,', f'columns = {{ value = {die_cols},')
    text = text.replace('rows = { value = 7,', f'rows = {{ value = {die_rows},')
    p = tmp_path / f"tiny-{width}x{height}.toml"
    p.write_text(text, encoding="utf-8")
    return load_target(str(p))
