"""The shared file helpers every layer uses for hashes and the cache folder (dynaprag.files)."""
import hashlib

from dynaprag.files import cache_dir, sha256_file


def test_sha256_file_reads_in_blocks_and_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # > one block of the small chunk below
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path, chunk=4096) == sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


def test_cache_dir_is_the_environment_folder_else_the_platform_one(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAPRAG_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("DYNAPRAG_CACHE")
    assert cache_dir().name == "dynaprag" and cache_dir() != tmp_path / "cache"
