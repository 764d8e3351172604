"""The pure core: load a spec (`spec`), find its problems (`rules`), compute what every release shares
(`facts`, `vram`, `catalog`, `lfinfo`), render the releases' values (`render`) and write them (`write`).
It reads the spec, its own data files and, for a model's template, model files; it runs no process and
reaches no network. The component table (`components`) and the storage layout (`storage`) live here once."""
