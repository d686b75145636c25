import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# DeepSpeed (when installed) prints its accelerator choice on stdout when it is first imported (save_pretrained
# imports it through accelerate); the CLI sends it to stderr, and naming the CPU keeps in-process tests quiet too.
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch  # noqa: E402

torch.set_num_threads(1)  # pytest-xdist runs one worker per core
sys.path.insert(0, os.path.dirname(__file__))


def pytest_collection_modifyitems(config, items):
    """Tests that spawn torchrun process groups run one after another on one xdist worker (`--dist loadgroup`):
    two gloo groups starting at once on a loaded 2-core machine were seen to abort."""
    import pytest

    for item in items:
        if item.get_closest_marker("distributed"):
            item.add_marker(pytest.mark.xdist_group("torchrun"))
