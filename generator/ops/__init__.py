"""The cluster-facing side: the API client (`kube`), helm and the plan of a run (`helm`), one experiment on one
cluster (`target`), waiting (`wait`), why a pod fails (`diagnose`), `lfk run` (`run`), `lfk status`
(`status`, `reader`), the guide's checklists (`readiness`, `cluster_readiness`) and port-forwards (`ui`).
Nothing here prints: results are data, progress goes through a callback."""
