"""llamafactory-k8s: one experiment spec -> validated Helm values for LLaMA-Factory on Kubernetes, and the
commands that run them.

Rooms (each calls only the rooms below it):
  cli/      click: parse, call, print, pick the exit code (the only place that prints)
  ops/      the cluster-facing side: helm runner and plan, waiting, diagnosis, status, readiness, ui
  cluster/  the local cluster behind `lfk cluster`: control plane, simulated GPU nodes, the real node
  checks/   checks that read beyond the spec: the storage's files, the installed LLaMA-Factory
  core/     pure: spec -> rules -> facts -> render -> write (no subprocess, no network)
errors.py holds the one error root (LfkError); project.py where the project's files and tools are.
"""
