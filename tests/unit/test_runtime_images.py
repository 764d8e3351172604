"""Whether containerd can start containers from an image (generator/cluster/runtime.py `whole`), read from
`ctr images check` as containerd 2.2 prints it: the layers' blobs are discarded once unpacked, so content
"incomplete" is the normal state, and only an image that is not unpacked is broken."""

from __future__ import annotations

from generator.cluster import runtime

# containerd 2.2.9's output on the real node, the CRI's image-id aliases included (widths shortened)
CHECK = """\
REF                          TYPE                                       DIGEST          STATUS           SIZE              UNPACKED
lfk.local/llamafactory:0.9.5 application/vnd.oci.image.manifest.v1+json sha256:64505b71 incomplete (1/6) 2.5 KiB/5.9 GiB   true
lfk.local/pause:3.10         application/vnd.oci.image.manifest.v1+json sha256:2ce363d1 incomplete (0/2) 0.0 B/677.3 KiB   false
sha256:17ddce6c989d830976bb  application/vnd.oci.image.manifest.v1+json sha256:64505b71 incomplete (1/6) 2.5 KiB/5.9 GiB   true
"""


def test_an_unpacked_image_is_whole_and_one_that_is_not_is_broken() -> None:
    assert runtime.whole(CHECK) == {
        "lfk.local/llamafactory:0.9.5": True,
        "lfk.local/pause:3.10": False,
        "sha256:17ddce6c989d830976bb": True,
    }


def test_no_images_and_stray_lines_give_nothing() -> None:
    assert runtime.whole("") == {}
    assert runtime.whole("REF TYPE DIGEST STATUS SIZE UNPACKED\nctr: some error\n") == {}
