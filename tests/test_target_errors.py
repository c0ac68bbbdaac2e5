"""A bad target file fails on load with one line naming the file, the field, the value and what was expected."""
from __future__ import annotations

import pytest
from target_util import preset_text

from wafercc.target import TargetError, load_target

SRAM = 'sram = { value = 48, unit = "KiB", source = "alcf", confidence = "high" }'
CLOCK = 'clock = { value = 1.1, unit = "GHz", source = "clock_research", confidence = "low" }'

# (id, old text, new text, substrings the message must contain)
CASES = [
    ("missing-field", CLOCK, "", ["core.clock", "missing"]),
    ("string-value", SRAM, SRAM.replace("value = 48", 'value = "48"'), ["core.sram", "'48'", "finite number"]),
    ("bool-value", SRAM, SRAM.replace("value = 48", "value = true"), ["core.sram", "True", "finite number"]),
    ("negative", "fabric_width = { value = 762", "fabric_width = { value = -762", ["mesh.fabric_width", "-762", "positive"]),
    ("zero", "simd_lanes_fp16 = { value = 8", "simd_lanes_fp16 = { value = 0", ["core.simd_lanes_fp16", "0", "positive"]),
    ("not-whole", SRAM, SRAM.replace("value = 48", "value = 48.3"), ["core.sram", "48.3", "whole number of B"]),
    ("unknown-field", SRAM, SRAM + "\nsram_banks = 8", ["core.sram_banks", "known field"]),
    ("unknown-key", SRAM, SRAM.replace("}", ', precision = 1 }'), ["core.sram.precision", "value, unit, source"]),
    ("missing-source", SRAM, SRAM.replace(', source = "alcf"', ""), ["core.sram.source", "every number needs one"]),
    ("unknown-source", SRAM, SRAM.replace('"alcf"', '"wikipedia"'), ["core.sram.source", "'wikipedia'", "[sources]"]),
    ("bad-confidence", SRAM, SRAM.replace('"high"', '"sure"'), ["core.sram.confidence", "'sure'", "high|medium"]),
    ("bad-unit", SRAM, SRAM.replace('"KiB"', '"KB/s"'), ["core.sram.unit", "'KB/s'", "KiB"]),
    ("plain-number", CLOCK, "clock = 1.1", ["core.clock", "1.1", "{ value, unit, source, confidence }"]),
    ("color-out-of-range", "[21, 22, 23]", "[21, 22, 24]", ["fabric.reserved_colors", "24", "0..23"]),
    ("color-duplicate", "[21, 22, 23]", "[21, 22, 22]", ["fabric.reserved_colors", "distinct"]),
    ("colors-not-ints", "[21, 22, 23]", '["memcpy"]', ["fabric.reserved_colors", "integer color ids"]),
    ("reserve-ge-sram", 'sram_reserved = { value = 4,', 'sram_reserved = { value = 48,', ["core.sram_reserved", "'48 KiB'", "less than core.sram (48 KiB)"]),
    ("offset-mismatch", "offset_x = { value = 4", "offset_x = { value = 5", ["mesh.offset_x", "5", "= 4"]),
    ("rate-too-big", 'value = 1, unit = "%"', 'value = 150, unit = "%"', ["defects.default_dead_core_rate", "150", "[0, 1)"]),
    ("chip-over-system", "chip = { value = 17.25", "chip = { value = 30", ["power.chip", "'30 kW'", "power.system (23 kW)"]),
    ("unknown-section", "[mesh]", "[extras]\nx = 1\n\n[mesh]", ["extras", "unknown section"]),
    ("schema-version", "schema_version = 1", "schema_version = 2", ["target.schema_version", "2", "expected 1"]),
    ("bad-toml", "[mesh]", "[mesh", ["not valid TOML"]),
    ("empty-citation", 'alcf = "Argonne', 'alcf = "" #', ["sources.alcf", "citation"]),
    ("fabric-too-small", "fabric_width = { value = 762", "fabric_width = { value = 7", ["mesh.fabric_width", "7", "larger than"]),
    ("cost-model-no-source", "[cost_model]", '[cost_model]\nsync = { value = 1, unit = "cycles", confidence = "low" }',
     ["cost_model.sync.source", "every number needs one"]),
]


@pytest.mark.parametrize("case_id,old,new,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_target_file(tmp_path, case_id, old, new, expect):
    text = preset_text()
    assert old in text, old
    path = tmp_path / f"{case_id}.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(TargetError) as ei:
        load_target(str(path))
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(str(path) + ": "), msg
    for s in expect:
        assert s in msg, (s, msg)


def test_missing_section(tmp_path):
    text = preset_text()
    start, end = text.index("[io]"), text.index("[power]")
    path = tmp_path / "no-io.toml"
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    with pytest.raises(TargetError, match=r"section \[io\] is missing"):
        load_target(str(path))
