"""Weights resolution against a loopback HTTP server serving an upstream-format checkpoint."""

import dataclasses
import hashlib
import pickle
import http.server
import threading
from pathlib import Path

import pytest
import torch

from r21d_features.models.r21d import R21DExtractor
from r21d_features.models.r21d.builders import build_network
from r21d_features.models.r21d.weights import WeightsUnavailableError, resolve_checkpoint
from r21d_features.models.r21d.zoo import get_record
from tests.conftest import SAMPLES, run_main


class _Server:
    """Serves files from a folder on 127.0.0.1 and counts GET requests per path."""

    def __init__(self, folder: Path) -> None:
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(folder), **kw)

            def do_GET(self):  # noqa: N802
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served_checkpoint(tmp_path, monkeypatch):
    """(record pointing at the loopback server, server, served file); TORCH_HOME is a fresh folder."""
    record = get_record("r2plus1d_18_16_kinetics")
    www = tmp_path / "www"
    www.mkdir()
    staging = tmp_path / "staging.pth"
    torch.manual_seed(0)
    torch.save(build_network(record).state_dict(), staging)
    prefix = hashlib.sha256(staging.read_bytes()).hexdigest()[:8]
    file_name = f"r2plus1d_18-{prefix}.pth"  # the upstream naming scheme: <name>-<sha256 prefix>.pth
    served = www / file_name
    staging.rename(served)
    server = _Server(www)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    record = dataclasses.replace(record, file_name=file_name, url=f"{server.url}/{file_name}", sha256_prefix=prefix)
    yield record, server, served
    server.close()


def test_download_then_cache(served_checkpoint, tmp_path):
    record, server, served = served_checkpoint
    path = resolve_checkpoint(record)
    assert path == tmp_path / "torch_home" / "hub" / "checkpoints" / record.file_name
    assert path.read_bytes() == served.read_bytes()
    assert server.hits == {f"/{record.file_name}": 1}
    assert resolve_checkpoint(record) == path  # second time: from the cache, no request
    assert server.hits == {f"/{record.file_name}": 1}


def test_tampered_download_is_refused_and_not_saved(served_checkpoint, tmp_path):
    record, server, served = served_checkpoint
    served.write_bytes(served.read_bytes() + b"tampered")
    with pytest.raises(WeightsUnavailableError, match="hash check"):
        resolve_checkpoint(record)
    assert not (tmp_path / "torch_home" / "hub" / "checkpoints" / record.file_name).exists()


def test_tampered_cache_is_refused(served_checkpoint):
    record, _, _ = served_checkpoint
    cached = resolve_checkpoint(record)
    cached.write_bytes(b"not the upstream file")
    with pytest.raises(WeightsUnavailableError, match="corrupt.*delete it"):
        resolve_checkpoint(record)


def test_offline_message_names_file_url_and_destination(served_checkpoint):
    record, server, _ = served_checkpoint
    server.close()  # nothing listens there any more
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_checkpoint(record)
    message = str(info.value)
    assert record.file_name in message and record.url in message
    assert "hub/checkpoints" in message and "checkpoint_path" in message


def test_checkpoint_path_is_used_as_given(checkpoints, tmp_path):
    extractor = R21DExtractor(device="cpu", checkpoint_path=str(checkpoints["r2plus1d_18_16_kinetics"]))
    assert extractor.weights_source == str(checkpoints["r2plus1d_18_16_kinetics"])
    with pytest.raises(WeightsUnavailableError, match="is not a file"):
        resolve_checkpoint(get_record("r2plus1d_18_16_kinetics"), tmp_path / "missing.pth")


def test_non_tensor_pickle_is_refused(tmp_path):
    evil = tmp_path / "evil.pth"


    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    evil.write_bytes(pickle.dumps(Boom(), protocol=2))
    with pytest.raises(WeightsUnavailableError, match="cannot load weights"):
        R21DExtractor(device="cpu", checkpoint_path=str(evil))
    assert not (tmp_path / "pwned").exists()


def test_cli_offline_fails_before_touching_videos(tmp_path):
    # No weights in a fresh TORCH_HOME and no way out (a proxy on a closed loopback port).
    out = tmp_path / "feats"
    proc = run_main(
        "feature_type=r21d", f"video_paths=[{SAMPLES[0]}]", "device=cpu", "on_extraction=save_numpy",
        f"output_path={out}",
        env={"TORCH_HOME": str(tmp_path / "th"), "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"},
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "r2plus1d_18-91a641e6.pth" in proc.stderr
    assert "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth" in proc.stderr
    assert str(tmp_path / "th" / "hub" / "checkpoints") in proc.stderr
    assert not out.exists()
