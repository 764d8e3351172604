"""The pure core: load an experiment once (`experiment`: the spec from `spec`, its facts, its problems from the
`rules` package), compute what every release shares (`facts`, `vram`, `catalog`, `lfinfo`), build each
release's values (`releases`, one module per component), check them against the chart (`render`) and write
them (`write`). It reads the spec, the specs beside it (a shared host, neighbours a merge must not publish
over), its own data files and, for a model's template, model files; it runs no process and reaches no network.
The facts shared with the chart and the pods (storage layout, ports, exit codes, component names, versions) are
the chart's `files/contract.json`, read by `contract`; `storage` holds the path rules over that layout,
`components` what each component is to the generator."""
