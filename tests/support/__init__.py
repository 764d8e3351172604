"""Test-only code shared by the tiers: the tiny model builder, the CPU smoke flow, small API helpers."""
