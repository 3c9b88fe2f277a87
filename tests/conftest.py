import os

# Triton's interpreter must be chosen before triton is first imported: triton.language's own @jit helpers
# (tl.sum, tl.max, ...) are decorated at import, and `import diffusers` / `import transformers` import
# triton. Any test module may import those first, so the switch lives here, in the first file pytest loads.
# It only matters to code that launches Triton kernels (anygen.kernels under ANYGEN_KERNELS=triton on CPU).
os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def single_thread():
    """Run a module on one intra-op thread: tiny shapes gain nothing from a second, and lose 10x on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
