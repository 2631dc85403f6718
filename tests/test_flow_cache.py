"""The attention-flow kernel stays cached on disk from a read-only install (a Docker image, a Space run
by a non-root user): numba's own cache locations unusable, it falls back to a directory of this user's."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

numba = pytest.importorskip("numba")
caching = pytest.importorskip("numba.core.caching")

from hf_vit_rollout.methods import _flow_kernel  # noqa: E402


def _add(a, b):
    return a + b


@pytest.fixture
def read_only_install(monkeypatch, tmp_path):
    """numba can write neither next to the source nor to its user-wide cache; the temp dir is tmp_path."""
    def refuse(self):
        raise OSError("read-only file system")

    for name in ("InTreeCacheLocator", "UserWideCacheLocator"):
        monkeypatch.setattr(getattr(caching, name), "ensure_cache_path", refuse)
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    return tmp_path


def test_a_read_only_install_caches_in_a_private_directory(read_only_install):
    with pytest.raises(RuntimeError, match="no locator available"):  # what numba alone does here
        numba.njit(cache=True)(_add)
    compiled = _flow_kernel._compiled(_add)
    assert compiled(2, 3) == 5
    private = read_only_install / f"hf_vit_rollout-numba-{os.getuid()}"
    assert compiled._cache._cache_path.startswith(str(private))
    assert any(p.suffix == ".nbi" for p in private.rglob("*"))  # the index numba loads in the next process
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert numba.config.CACHE_DIR == ""  # numba's own setting is left as it was


def test_a_directory_another_user_could_write_is_not_used(read_only_install):
    private = read_only_install / f"hf_vit_rollout-numba-{os.getuid()}"
    private.mkdir(mode=0o777)
    private.chmod(0o777)
    assert _flow_kernel.private_cache_dir() is None
    compiled = _flow_kernel._compiled(_add)  # compiled in memory instead
    assert compiled(np.int64(2), np.int64(3)) == 5 and not any(private.iterdir())
