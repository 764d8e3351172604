"""Checks that read beyond the spec, imported only when a command asks for them: the storage's files through
a local mount (`storage`, with LLaMA-Factory's data rules in `datasets`) and the installed LLaMA-Factory's
own argument checks in a child process (`deep`)."""
