"""ONNX Runtime sessions as htr run uses them on a shared CPU."""

from __future__ import annotations

import pytest
import torch

from models import onnx_backend as ob


def test_sessions_do_not_spin_idle_threads(tmp_path, monkeypatch):
    """Spinning intra-op threads take the core the main thread's Python and the decode threads need."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("HTR_CACHE_DIR", str(tmp_path))
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1)).eval()
    session = ob._session(ob.exported_graph(net, torch.rand(1, 1, 8, 8), {0: "b"}), threads=2)
    opts = session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 2
