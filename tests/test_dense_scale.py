"""Dense at scale: synthetic vectors by row range, the resumable IVF-PQ build opened memory-mapped,
the streamed exact top-k, and the resumable float16 encoding with the real default encoder."""
from __future__ import annotations

import numpy as np
import pytest

from dynaprag.retrieval.faiss_disk import INDEX_FILE, build_ivfpq, exact_top_k, open_ivfpq, recall_at_k, refine
from dynaprag.retrieval.synthetic_vectors import (VectorModel, fit_vector_model, mean_nearest_cosine,
                                                  model_from_dict, model_to_dict)

faiss = pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def model() -> VectorModel:
    rng = np.random.default_rng(0)
    real = rng.standard_normal((1_500, 16)).astype(np.float32)
    real[:, :3] *= 4  # anisotropic, like real embeddings
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    return fit_vector_model(real, topic_size=32)


def test_synthetic_rows_are_a_function_of_the_row(model):
    whole = model.rows(0, 20_000)
    assert np.array_equal(whole, np.concatenate([model.rows(0, 8_191), model.rows(8_191, 20_000)]))
    assert np.array_equal(whole[12_345:12_400], model.rows(12_345, 12_400))
    assert np.allclose(np.linalg.norm(whole, axis=1), 1, atol=1e-5)
    assert model_from_dict(model_to_dict(model)).rows(100, 200).tobytes() == model.rows(100, 200).tobytes()


def test_fit_matches_the_real_nearest_neighbour_cosine(model):
    fitted = model.fitted
    assert abs(fitted["synthetic_mean_nearest_cosine"] - fitted["real_mean_nearest_cosine"]) < 0.01
    assert mean_nearest_cosine(model.rows(0, 1_500)) == pytest.approx(fitted["synthetic_mean_nearest_cosine"],
                                                                       abs=1e-3)


def test_exact_top_k_streams_to_the_flat_index_answer(model):
    rows, queries = model.rows(0, 5_000), model.queries(50, 5_000)
    flat = faiss.IndexFlatIP(model.dim)
    flat.add(rows)
    _, want = flat.search(queries, 10)
    _, got = exact_top_k(model.rows, 5_000, queries, 10, chunk_size=1_200)
    assert recall_at_k(got, want) == 1.0


def test_ivfpq_build_resumes_after_a_failure_and_opens_memory_mapped(model, tmp_path):
    total = 12_000

    def failing(start, stop):  # the vector source dies while the third shard is encoded
        if start >= 8_000 and (tmp_path / "resumed" / "trained.faiss").is_file():
            raise OSError("disk went away")
        return model.rows(start, stop)

    settings = dict(dim=model.dim, m=4, shard_size=4_000, chunk_size=2_000, progress=False)
    with pytest.raises(OSError):
        build_ivfpq(failing, total, tmp_path / "resumed", **settings)
    done = sorted(p.name for p in (tmp_path / "resumed").glob("shard-*.faiss"))
    assert done == ["shard-00000.faiss", "shard-00001.faiss"]
    asked = []
    meta = build_ivfpq(lambda a, b: asked.append(a) or model.rows(a, b), total, tmp_path / "resumed", **settings)
    assert min(asked) == 8_000  # the finished shards and the training were not redone
    assert meta["vectors"] == total and not list((tmp_path / "resumed").glob("shard-*"))
    straight = build_ivfpq(model.rows, total, tmp_path / "straight", **settings)
    assert straight["bytes"] == meta["bytes"]
    queries = model.queries(40, total)
    mapped = open_ivfpq(tmp_path / "resumed", nprobe=8)
    in_memory = faiss.read_index(str(tmp_path / "straight" / INDEX_FILE))
    in_memory.nprobe = 8
    assert np.array_equal(mapped.search(queries, 10)[1], in_memory.search(queries, 10)[1])
    _, exact = exact_top_k(model.rows, total, queries, 10)
    mapped.nprobe = mapped.nlist  # every list: only the quantisation is left between it and exact
    assert recall_at_k(mapped.search(queries, 10)[1], exact) > 0.3
    stored = np.lib.format.open_memmap(tmp_path / "vectors.f16.npy", mode="w+", dtype=np.float16,
                                       shape=(total, model.dim))
    stored[:] = model.rows(0, total)
    mapped.nprobe = 8
    plain = recall_at_k(mapped.search(queries, 10)[1], exact)
    refined = recall_at_k(refine(mapped.search(queries, 100)[1], stored, queries, 10)[1], exact)
    assert refined > plain
    everything = np.tile(np.arange(total), (len(queries), 1))  # every row a candidate: the exact answer
    assert recall_at_k(refine(everything, stored, queries, 10)[1], exact) > 0.95  # float16 rounding ties only
    with pytest.raises(ValueError, match="other settings"):
        build_ivfpq(model.rows, total, tmp_path / "straight", **{**settings, "m": 8})


@pytest.mark.slow
def test_encode_to_disk_resumes_where_it_stopped(tmp_path):
    from dynaprag.corpora import read_passages
    from dynaprag.retrieval.config import demo_corpus_path
    from dynaprag.retrieval.dense_encode import IDS_FILE, encode_to_disk, open_vectors

    passages = list(read_passages(demo_corpus_path()))

    def dying(n):
        for i, p in enumerate(passages):
            if i == n:
                raise KeyboardInterrupt
            yield p

    with pytest.raises(KeyboardInterrupt):
        encode_to_disk(dying(37), tmp_path / "resumed", len(passages), chunk_size=16, progress=False)
    assert (tmp_path / "resumed" / IDS_FILE).read_text().count("\n") == 32
    state = encode_to_disk(iter(passages), tmp_path / "resumed", len(passages), chunk_size=16, progress=False)
    assert state["rows"] == len(passages)
    encode_to_disk(iter(passages), tmp_path / "straight", len(passages), chunk_size=16, progress=False)
    resumed, straight = open_vectors(tmp_path / "resumed"), open_vectors(tmp_path / "straight")
    assert np.allclose(resumed.astype(np.float32), straight.astype(np.float32), atol=2e-3)
    assert (tmp_path / "resumed" / IDS_FILE).read_text().split() == [p.id for p in passages]
    with pytest.raises(ValueError, match="another folder"):
        encode_to_disk(iter(passages), tmp_path / "resumed", len(passages) - 1, progress=False)
