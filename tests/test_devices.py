"""One --device resolver and one mixed-precision policy, used by every command (they were four copies)."""

import re
from pathlib import Path

import pytest
import torch

import vidpipe
from vidpipe.devices import amp_dtype, resolve_device
from vidpipe.errors import VidpipeError


def test_devices_resolve_and_refuse_in_one_line():
    gpu = torch.cuda.is_available()
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if gpu else "cpu")
    with pytest.raises(VidpipeError, match="--device must be auto, cpu or cuda; got tpu"):
        resolve_device("tpu")
    if not gpu:
        with pytest.raises(VidpipeError, match="^--device cuda, but torch sees no GPU; use --device cpu$"):
            resolve_device("cuda")
        with pytest.raises(VidpipeError, match="^device=cuda, but torch sees no GPU; use device=cpu$"):  # a run config's override
            resolve_device("cuda", flag="device")


def test_mixed_precision_is_off_on_the_cpu_and_as_asked_on_a_gpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [amp_dtype(a, cpu) for a in ("auto", "bf16", "fp16", "off")] == [None] * 4
    assert (amp_dtype("bf16", cuda), amp_dtype("fp16", cuda), amp_dtype("off", cuda)) == (torch.bfloat16, torch.float16, None)


def test_no_module_resolves_devices_or_precision_itself():
    package = Path(vidpipe.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "devices.py":
            continue
        text = path.read_text()
        assert not re.search(r"""device\s*==\s*["']auto["']|is_bf16_supported""", text), f"{path.relative_to(package)} resolves it itself"
