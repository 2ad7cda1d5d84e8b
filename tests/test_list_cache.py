"""``harness list`` answers from its cache when nothing it depends on changed, without importing torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import list_cache
from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
#: Runs ``list`` and says whether the process imported torch to answer.
CHILD = "import sys; from harness.cli import main; rc = main(sys.argv[1:]); print('torch imported:', 'torch' in sys.modules); sys.exit(rc)"  # noqa: E501


def listed(cache: Path, *args: str, **env: str) -> tuple[str, bool]:
    out = subprocess.run([sys.executable, "-c", CHILD, "list", *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "HARNESS_CACHE_DIR": str(cache), "COLUMNS": "200", **env}, timeout=300)
    assert out.returncode == 0, out.stderr
    text, marker = out.stdout.rsplit("torch imported:", 1)
    return text, marker.strip() == "True"


def test_a_second_list_is_the_same_answer_without_importing_torch(tmp_path: Path) -> None:
    first, imported = listed(tmp_path)
    assert imported and "eager " in first and len(list(tmp_path.glob("list-*.json"))) == 1
    again, imported = listed(tmp_path)
    assert not imported
    assert again == first
    some, imported = listed(tmp_path, "compile*")  # a pattern filters the saved answer
    *shown, forms = some.splitlines()
    assert not imported and shown == [ln for ln in first.splitlines() if ln.startswith("compile")]
    assert forms.startswith("and graphed_NAME for any variant NAME")  # the forms made when asked for


def test_what_the_answer_depends_on_makes_it_asked_again(tmp_path: Path) -> None:
    env = {"TRITON_INTERPRET": "0"}
    first, _ = listed(tmp_path, **env)
    interpreted, imported = listed(tmp_path, TRITON_INTERPRET="1")  # the interpreter makes triton_fused ready on CPU
    assert imported and interpreted != first
    for saved in tmp_path.glob("list-*.json"):
        saved.unlink()
    _, imported = listed(tmp_path, "--refresh", **env)
    assert imported
    _, imported = listed(tmp_path, **env)  # the refreshed answer was saved
    assert not imported
    _, imported = listed(tmp_path, "--device", "cpu", **env)  # another device: another answer
    assert imported
    _, imported = listed(tmp_path, "--device", "cpu", **env)
    assert not imported


def test_an_unusable_cache_is_ignored(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    text, imported = listed(blocker)
    assert imported and "eager " in text
    cache = tmp_path / "cache"
    listed(cache)
    for saved in cache.glob("list-*.json"):
        saved.write_text("{broken")
    text, imported = listed(cache)
    assert imported and "eager " in text
    import json

    for damage in ({"variants": []}, {"variants": [{"name": 5, "description": "d", "devices": "cpu", "state": None}]}):
        for saved in cache.glob("list-*.json"):  # whole JSON, not a listing: a TypeError, or "no variant matches"
            saved.write_text(json.dumps(json.loads(saved.read_text()) | damage))
        text, imported = listed(cache, "eager")
        assert imported and "eager " in text, damage


def test_the_key_follows_the_sources_the_environment_and_the_device(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "variant.py"
    source.write_text("x = 1\n")
    monkeypatch.setattr(list_cache, "SOURCE_ROOTS", (tmp_path,))
    before = list_cache.key(None)
    assert list_cache.key(None) == before
    assert list_cache.key("cpu") != before
    source.write_text("x = 22\n")
    assert list_cache.key(None) != before
    changed = list_cache.key(None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert list_cache.key(None) != changed
    changed = list_cache.key(None)
    monkeypatch.setenv("SOME_PLUGIN_USE_GPU", "0")  # a plugin's check may read any variable
    assert list_cache.key(None) != changed
    changed = list_cache.key(None)
    monkeypatch.setenv("OLDPWD", "/elsewhere")  # the shell's bookkeeping: no check reads it
    monkeypatch.setenv("PWD", "/elsewhere")
    assert list_cache.key(None) == changed


def test_variants_registered_in_this_process_are_listed(temp_variant, capsys: pytest.CaptureFixture) -> None:
    """Registrations made in-process are in no saved answer: such a process is always answered afresh."""
    import variants.builtin  # noqa: F401 - the registry is loaded, as in any process that registered one
    from variants.registry import get_variant

    temp_variant("listed_here", get_variant("eager").build, description="registered by this test")
    assert main(["list", "listed_*"]) == 0
    assert "registered by this test" in capsys.readouterr().out


def make_plugin(root: Path, body: str) -> None:
    """A plugin installed as an editable install leaves it: entry point fixed, source editable."""
    (root / "scse_listed.py").write_text(body)
    info = root / "scse_listed-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scse-listed\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.variants]\nlisted = scse_listed\n")


def test_a_plugin_edited_in_place_is_asked_again_and_a_broken_one_is_never_answered_from_the_cache(
        tmp_path: Path) -> None:
    """Edited and reinstalled, a plugin kept its entry point, so `list` showed its old description;
    a plugin that failed to load was absent from a cached answer, with no warning, and still absent
    once the library it lacked was installed (nothing the cache's key reads had changed)."""
    plugins, cache = tmp_path / "plugins", tmp_path / "cache"
    plugins.mkdir()
    register = 'from variants import register\n@register("zz_listed", "{}")\ndef build(r, d, t):\n    return r\n'
    make_plugin(plugins, register.format("first words"))
    env = {"PYTHONPATH": os.pathsep.join([str(plugins), str(ROOT)])}
    text, _ = listed(cache, "zz_*", **env)
    assert "first words" in text
    make_plugin(plugins, register.format("second words") + "# longer now\n")
    text, imported = listed(cache, "zz_*", **env)
    assert imported and "second words" in text
    make_plugin(plugins, "import libfoo\n" + register.format("third words"))  # a library not installed yet
    out = subprocess.run([sys.executable, "-c", CHILD, "list", "eager"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "HARNESS_CACHE_DIR": str(cache), **env}, timeout=300)  # fmt: skip
    again = subprocess.run([sys.executable, "-c", CHILD, "list", "eager"], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "HARNESS_CACHE_DIR": str(cache), **env}, timeout=300)  # fmt: skip
    assert "torch imported: True" in again.stdout  # asked again, not answered from the cache
    for done in (out, again):
        assert done.returncode == 0 and "variant plugin 'listed' (scse_listed) failed to load: " \
            "ModuleNotFoundError: No module named 'libfoo'" in done.stderr, done.stderr
    (plugins / "libfoo.py").write_text("")  # the library it lacked, installed; the plugin itself unchanged
    text, _ = listed(cache, "zz_*", **env)
    assert "third words" in text
