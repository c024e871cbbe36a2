"""Engine backends: the native kernels build where a compiler exists, the pure-PyTorch fallback
runs (and says so) where none does, both paths agree, the float32 tanh is accurate, and the
native memory cache reuses and frees its blocks."""

import copy
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stablernn import engine
from stablernn.engine import native
from stablernn.models.lipschitz import LipschitzRNN
from stablernn.models.network import SparseComboNet


@pytest.fixture
def fresh_state(monkeypatch):
    """Run a test against a fresh, not-yet-loaded engine state; restored afterwards."""
    for key, value in {"tried": False, "module": None, "reason": None, "forced": None}.items():
        monkeypatch.setitem(native._state, key, value)
    monkeypatch.setattr(engine.dispatch, "_logged", set())
    return native._state


def test_native_kernels_build_where_a_compiler_exists():
    """A broken C++ source or build must fail here, not silently fall back."""
    if native._compiler() is None:
        pytest.skip("no C++ compiler on this machine: the fallback tests cover it")
    assert native.load() is not None, native.fallback_reason()
    assert native.backend_for(torch.zeros(2)) == "native"


def test_without_a_compiler_the_python_path_runs_and_says_so(fresh_state, monkeypatch, caplog):
    monkeypatch.setattr(native, "_compiler", lambda: None)
    layer = LipschitzRNN(2, 8, step_size=0.1, parametrization="paper")
    loop = copy.deepcopy(layer)
    loop.engine = "loop"
    inputs = torch.randn(12, 3, 2)
    with caplog.at_level(logging.INFO, logger="stablernn.engine"):
        output, _ = layer(inputs)
    assert native.load() is None
    assert "no C++ compiler" in native.fallback_reason()
    assert native.backend_for(inputs) == "python"
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "pure-PyTorch path" in messages and "no C++ compiler" in messages
    assert "LipschitzRNN runs on the python engine path" in messages
    torch.testing.assert_close(output, loop(inputs)[0], rtol=1e-6, atol=1e-7)
    with pytest.raises(RuntimeError, match="not available"):
        engine.set_backend("native")


def test_environment_switch_disables_the_native_kernels(fresh_state, monkeypatch):
    monkeypatch.setenv("STABLERNN_ENGINE_NATIVE", "0")
    assert native.load() is None
    assert "STABLERNN_ENGINE_NATIVE" in native.fallback_reason()


def test_a_failing_build_falls_back(fresh_state, monkeypatch):
    from torch.utils import cpp_extension

    def broken(*args, **kwargs):
        raise RuntimeError("Error building extension 'x': c++: fatal error")

    monkeypatch.setattr(cpp_extension, "load_inline", broken)
    monkeypatch.setattr(native, "extension_name",
                        lambda flags=None: "stablernn_engine_test_missing")
    assert native.load() is None
    assert "failed to build" in native.fallback_reason()
    layer = SparseComboNet(1, num_subnetworks=2, subnetwork_size=4, density=0.3, seed=0)
    output, _ = layer(torch.randn(5, 2, 1))
    assert output.shape == (5, 2, 8)


class FakeKernels:
    """What ``_build`` needs of a compiled module, for tests that skip the compiler."""

    def set_cache_limit(self, limit):
        self.limit = limit


def test_a_failing_openmp_build_retries_without_openmp(fresh_state, monkeypatch, caplog):
    """A compiler without OpenMP support still gets native kernels (on one thread), and says so."""
    tried = []

    def compile_with(flags):
        tried.append(list(flags))
        if "-fopenmp" in flags:
            raise RuntimeError("Error building extension: unsupported option '-fopenmp'")
        return FakeKernels()

    monkeypatch.setattr(native, "_flag_sets", lambda: [["-O3", "-fopenmp"], ["-O3"]])
    monkeypatch.setattr(native, "_compile", compile_with)
    with caplog.at_level(logging.WARNING, logger="stablernn.engine"):
        assert isinstance(native.load(), FakeKernels)
    assert tried == [["-O3", "-fopenmp"], ["-O3"]]
    assert native.fallback_reason() is None
    assert "without OpenMP" in caplog.text and "-fopenmp" in caplog.text
    assert native.extension_name(["-O3"]) != native.extension_name(["-O3", "-fopenmp"])


def test_backend_choice_follows_device_dtype_and_forcing():
    assert native.backend_for(torch.zeros(2, dtype=torch.float16)) == "python"
    with engine.use_backend("python"):
        assert native.backend_for(torch.zeros(2)) == "python"
    with pytest.raises(ValueError, match="backend"):
        engine.set_backend("cuda")


def test_native_and_python_paths_agree_on_a_training_step():
    """One optimizer step from the same start on each path: same loss, same parameters."""
    if native.load() is None:
        pytest.skip(f"native kernels unavailable: {native.fallback_reason()}")
    torch.manual_seed(0)
    base = LipschitzRNN(1, 32, step_size=0.05, parametrization="paper")
    inputs, target = torch.randn(50, 6, 1), torch.randn(6, 32)
    results = []
    for backend in ("native", "python"):
        layer = copy.deepcopy(base)
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
        with engine.use_backend(backend):
            _, last = layer(inputs)
            loss = ((last[0] - target) ** 2).mean()
            loss.backward()
            optimizer.step()
        results.append((loss.item(), [p.detach().clone() for p in layer.parameters()]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_float32_tanh_accuracy():
    """The native float32 tanh (a clamped rational approximation) against tanh in float64:
    at most about 3 ulp (measured 3.6e-7 absolute near |x| = 5.75; torch.tanh: 3e-8)."""
    module = native.load()
    if module is None:
        pytest.skip(f"native kernels unavailable: {native.fallback_reason()}")
    special = torch.tensor([0.0, 1e-30, -1e-8, 7.9053, 30.0])
    x = torch.cat([torch.linspace(-12, 12, 400_001), special])
    error = (module.tanh_float(x).double() - torch.tanh(x.double())).abs()
    assert error.max().item() < 5e-7
    relative = error / torch.tanh(x.double()).abs().clamp_min(1e-30)
    assert relative[x.abs() > 1e-3].max().item() < 5e-7


def test_memory_cache_reuses_and_frees_blocks():
    module = native.load()
    if module is None:
        pytest.skip(f"native kernels unavailable: {native.fallback_reason()}")
    layer = LipschitzRNN(1, 64, parametrization="paper")
    inputs = torch.randn(200, 32, 1)  # 1.6 MB of states: above the cache's 1 MB threshold
    with torch.no_grad():
        layer(inputs)
        before = native.cache_info()
        layer(inputs)
        after = native.cache_info()
    assert after["hits"] > before["hits"]
    assert after["cached_bytes"] > 0
    native.empty_cache()
    assert native.cache_info()["cached_bytes"] == 0


def _fake_build(monkeypatch, lock):
    """Replace torch's build by a recorder of whether its lock file existed when it ran."""
    from torch.utils import cpp_extension

    seen = []
    monkeypatch.setattr(cpp_extension, "load_inline", lambda *args, **kwargs: seen.append(
        (lock.exists(), kwargs["build_directory"])) or object())
    return seen


@pytest.fixture
def build_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    monkeypatch.setitem(native._state, "announced", True)
    name = native.extension_name(["-O3"])
    directory = Path(native.build_directory(name))
    directory.mkdir(parents=True, exist_ok=True)
    return name, directory


HOLD_BUILD_LOCK = """
import sys, time
from stablernn.engine import native
with native.build_lock(sys.argv[1]):
    open(sys.argv[2], "w").close()   # torch's lock, as its build would take it
    print("holding", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _holder(name, directory, seconds):
    """A process that takes the build lock and torch's lock, then sleeps ``seconds``."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_BUILD_LOCK, name,
                               str(directory / "lock"), str(seconds)],
                              stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert holder.stdout.readline().strip() == "holding"
    return holder


@pytest.mark.skipif(native.fcntl is None, reason="flock is POSIX")
def test_a_build_lock_left_by_a_killed_process_never_blocks(build_dir, monkeypatch):
    """A process killed while it holds torch's build lock leaves the file ``lock``; torch's build
    would wait on it forever (seen: a CI run hung behind a lock left minutes before). The OS lock
    died with its holder, so the next build removes torch's lock, fresh as it is, and builds in
    :func:`native.build_directory` (passed to torch explicitly)."""
    name, directory = build_dir
    holder = _holder(name, directory, 600)
    holder.kill()
    holder.wait()
    lock = directory / "lock"
    assert lock.exists() and time.time() - lock.stat().st_mtime < native.STALE_LOCK_SECONDS
    seen = _fake_build(monkeypatch, lock)
    native._compile(["-O3"])
    assert seen == [(False, str(directory))] and not lock.exists()


@pytest.mark.skipif(native.fcntl is None, reason="flock is POSIX")
def test_a_build_waits_for_a_live_build_of_the_same_library(build_dir, monkeypatch):
    """While another process builds, its locks are kept and this build waits until it ends."""
    name, directory = build_dir
    lock = directory / "lock"
    holder = _holder(name, directory, 2.0)
    seen = _fake_build(monkeypatch, lock)
    start = time.monotonic()
    native._compile(["-O3"])
    waited = time.monotonic() - start
    assert holder.wait() == 0
    assert waited > 0.5  # the holder still slept when this build started
    # the holder ended without releasing torch's lock (it is not torch): removed, then built
    assert seen == [(False, str(directory))]


def test_without_flock_old_build_locks_are_removed_and_fresh_ones_kept(build_dir, monkeypatch):
    """Where ``fcntl`` is missing, age decides: a fresh lock may be a build in progress."""
    name, directory = build_dir
    monkeypatch.setattr(native, "fcntl", None)
    lock = directory / "lock"
    old = time.time() - 2 * native.STALE_LOCK_SECONDS

    lock.write_text("")
    assert native.remove_stale_lock(name) is False and lock.exists()  # a build in progress
    os.utime(lock, (old, old))
    (directory / f"{name}.so").write_bytes(b"")
    assert native.remove_stale_lock(name) is True and not lock.exists()  # beside a library
    (directory / f"{name}.so").unlink()

    lock.write_text("")
    os.utime(lock, (old, old))
    seen = _fake_build(monkeypatch, lock)
    native._compile(["-O3"])
    assert seen == [(False, str(directory))] and not lock.exists()


def test_the_portable_build_is_the_last_resort(fresh_state, monkeypatch, caplog):
    """x86 multi-versioning failing (another CPU or toolchain) leaves the portable build."""
    tried = []

    def compile_with(flags):
        tried.append(list(flags))
        if native.PORTABLE_FLAG not in flags:
            raise RuntimeError("Error building extension: target_clones is not supported")
        return FakeKernels()

    monkeypatch.setattr(native, "_compile", compile_with)
    with caplog.at_level(logging.WARNING, logger="stablernn.engine"):
        assert isinstance(native.load(), FakeKernels)
    assert tried[-1][-1] == native.PORTABLE_FLAG and len(tried) == len(native._flag_sets())
    assert "portable build" in caplog.text


@pytest.mark.slow
def test_the_portable_kernels_compile_and_match_the_python_path(tmp_path, monkeypatch):
    """The build other CPUs get (no target_clones), forced here, computes the states the python
    path computes."""
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    flags = [*native._flag_sets()[0], native.PORTABLE_FLAG]
    kernels = cpp_extension.load_inline(native.extension_name(flags), cpp_sources=[native.SOURCE],
                                        extra_cflags=flags, extra_ldflags=[
                                            f for f in flags if f == "-fopenmp"], verbose=False)
    generator = torch.Generator().manual_seed(0)
    inputs, h0 = torch.randn(7, 3, 5, generator=generator), torch.randn(3, 5, generator=generator)
    transition_t = torch.eye(5) + 0.1 * torch.randn(5, 5, generator=generator)
    recurrent_t = 0.3 * torch.randn(5, 5, generator=generator)
    empty = h0.new_empty(0)
    tanh = engine.ACTIVATIONS["tanh"].native_code
    for kernel, reference in ((kernels.lipschitz_forward, engine.lipschitz_euler),
                              (kernels.lipschitz_rk2_forward, engine.lipschitz_rk2)):
        states, _ = kernel(inputs, empty, empty, h0, transition_t, recurrent_t, 0.1, tanh, True,
                           True)
        with engine.use_backend("python"):
            expected, _ = reference(inputs, h0, transition_t, recurrent_t, 0.1)
        torch.testing.assert_close(states, expected, rtol=1e-5, atol=1e-6)
