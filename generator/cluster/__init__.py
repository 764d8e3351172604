"""The local cluster behind `lfk cluster`: a real control plane built from the Go module proxy, run as
processes on 127.0.0.1 (`controlplane`, `processes`, `state`), simulated GPU nodes played by kwok (`nodes`),
and the whole lifecycle (`lifecycle`). It talks to the API through the operations' client (ops.kube)."""
