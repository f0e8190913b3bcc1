"""The content-keyed latent cache: hits, misses, invalidation, atomic writes, and its use by build_items."""
from __future__ import annotations

import shutil

import pytest
import torch

from data_fixtures import guide_dataset, save, snapshot, textured
from trainer.data import LatentCache, check_dataset, plan_buckets


@pytest.fixture
def img(tmp_path):
    return save(textured(1), tmp_path / "data" / "a.png")


def test_miss_put_hit_and_counters(tmp_path, img):
    cache = LatentCache(tmp_path / "cache", vae_id="v1")
    k = cache.key(img, 64, 64, True, False)
    assert cache.get(k) is None and (cache.hits, cache.misses) == (0, 1)
    z = torch.randn(4, 8, 8)
    cache.put(k, z)
    assert torch.equal(cache.get(k), z) and (cache.hits, cache.misses) == (1, 1)
    assert cache.stats() == {"hits": 1, "misses": 1, "write_errors": 0}
    files = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert files == [f"{k}.safetensors"]  # no temp file left behind


def test_key_follows_content_not_name(tmp_path, img):
    cache = LatentCache(tmp_path / "cache", "v1")
    base = cache.key(img, 64, 64, True, False)
    copy = shutil.copy(img, tmp_path / "data" / "renamed.png")
    assert cache.key(copy, 64, 64, True, False) == base  # a renamed file still hits
    assert len({base, cache.key(img, 64, 128, True, False), cache.key(img, 128, 64, True, False),
                cache.key(img, 64, 64, False, False), cache.key(img, 64, 64, True, True),
                LatentCache(tmp_path / "cache", "v2").key(img, 64, 64, True, False)}) == 6
    save(textured(2), img)  # same name, new bytes
    assert cache.key(img, 64, 64, True, False) != base


def test_invalidation_end_to_end(tmp_path, img):
    cache = LatentCache(tmp_path / "cache", "v1")
    cache.put(cache.key(img, 64, 64, True, False), torch.ones(4, 8, 8))
    save(textured(3), img)
    assert cache.get(cache.key(img, 64, 64, True, False)) is None
    assert LatentCache(tmp_path / "cache", "other-vae").get(LatentCache(tmp_path / "cache", "other-vae")
                                                             .key(img, 64, 64, True, False)) is None


def test_corrupt_entry_is_a_miss_and_is_replaced(tmp_path, img):
    cache = LatentCache(tmp_path / "cache", "v1")
    k = cache.key(img, 64, 64, True, False)
    cache.put(k, torch.ones(2))
    entry = next((tmp_path / "cache").rglob("*.safetensors"))
    entry.write_bytes(entry.read_bytes()[:20])  # a write cut off by a full disk
    assert cache.get(k) is None and not entry.exists()
    cache.put(k, torch.ones(2))
    assert torch.equal(cache.get(k), torch.ones(2))


def test_a_key_cannot_name_a_path(tmp_path):
    cache = LatentCache(tmp_path / "cache", "v1")
    before = snapshot(tmp_path)
    for bad in ("../../etc/passwd", "/abs", "A" * 64):
        with pytest.raises(ValueError, match="not a latent cache key"):
            cache.get(bad)
        with pytest.raises(ValueError, match="not a latent cache key"):
            cache.put(bad, torch.ones(1))
    assert snapshot(tmp_path) == before


def test_failed_write_costs_speed_not_the_run(tmp_path, img):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    cache = LatentCache(blocker, "v1")
    cache.put(cache.key(img, 64, 64, True, False), torch.ones(2))
    assert cache.write_errors == 1 and blocker.read_text().startswith("a file")


def test_needs_a_vae_id(tmp_path):
    with pytest.raises(ValueError, match="vae_id"):
        LatentCache(tmp_path, "")


def test_build_items_with_buckets_and_cache(tmp_path, tiny_sd15):
    """The encode step takes the buckets and the cache as they are: a second pass is all hits, same latents."""
    from trainer.encode import build_items
    from trainer.models import load_base_model

    torch.set_num_threads(1)
    root = guide_dataset(tmp_path / "ds", n=3)
    ds, _ = check_dataset(root, resolution=96, trigger_token="tok")
    sizes = plan_buckets(ds.image_sizes(), 96, step=32)  # square, landscape, portrait pictures
    assert sizes == [(96, 96), (128, 64), (64, 128)]
    bm = load_base_model(str(tiny_sd15))
    cache = LatentCache(tmp_path / "cache", vae_id="tiny")
    first = build_items(bm, ds, sizes, torch.device("cpu"), cache_text=True, latent_cache=cache)
    assert (cache.hits, cache.misses) == (0, 3)
    again = build_items(bm, ds, sizes, torch.device("cpu"), cache_text=True, latent_cache=cache)
    assert (cache.hits, cache.misses) == (3, 3)
    for a, b in zip(first, again):
        assert torch.equal(a.latent, b.latent) and a.size == b.size
    f = 2 ** (len(bm.vae.config.block_out_channels) - 1)
    assert [tuple(i.latent.shape[1:]) for i in first] == [(h // f, w // f) for w, h in sizes]


def test_items_encode_on_first_use_with_the_eager_values(tmp_path, tiny_sd15):
    """Lazy encoding (the training loop's, on the CPU) reads and encodes only what a batch asks for, caches each
    latent as it goes, and gives exactly the tensors that encoding everything up front gives."""
    from trainer.encode import ItemEncoder, build_items
    from trainer.models import load_base_model

    torch.set_num_threads(1)
    root = guide_dataset(tmp_path / "ds", n=3)
    ds, _ = check_dataset(root, resolution=96, trigger_token="tok")
    sizes = plan_buckets(ds.image_sizes(), 96, step=32)
    bm = load_base_model(str(tiny_sd15))
    cache = LatentCache(tmp_path / "lazy-cache", vae_id="tiny")
    enc = ItemEncoder(bm, torch.device("cpu"), cache_text=True, latent_cache=cache)
    items = enc.items(ds, sizes)
    assert not any(it.encoded for it in items) and not (tmp_path / "lazy-cache").exists()
    assert enc.ensure([items[1], items[1]]) == [items[1]]  # each item once
    assert [it.encoded for it in items] == [False, True, False]
    assert (cache.hits, cache.misses) == (0, 1) and len(list((tmp_path / "lazy-cache").rglob("*.safetensors"))) == 1
    assert enc.ensure([items[1]]) == [] and enc.pending
    enc.ensure(items)
    assert not enc.pending and (cache.hits, cache.misses) == (0, 3)
    assert [p.name for p in (tmp_path / "lazy-cache").rglob("*") if p.is_file() and not p.name.endswith(".safetensors")] == []
    eager = build_items(bm, ds, sizes, torch.device("cpu"), cache_text=True,
                        latent_cache=LatentCache(tmp_path / "eager-cache", vae_id="tiny"))
    for a, b in zip(items, eager):
        assert a.size == b.size and a.caption == b.caption
        assert torch.equal(a.latent, b.latent) and torch.equal(a.embeds, b.embeds)
        assert all(torch.equal(x, y) for x, y in zip(a.input_ids, b.input_ids))
    # a later run served from the lazily written cache gets the same bits
    again = build_items(bm, ds, sizes, torch.device("cpu"), cache_text=True, latent_cache=cache)
    assert cache.hits == 3 and all(torch.equal(a.latent, b.latent) for a, b in zip(items, again))


def test_vae_id_is_asked_once_at_the_first_key(tmp_path, img):
    """The job hashes the VAE in the background; the cache asks for the id only when a key is needed."""
    asked = []
    late = LatentCache(tmp_path / "cache", lambda: asked.append(1) or "v1")
    assert asked == []
    k = late.key(img, 64, 64, True, False)
    assert late.key(img, 64, 64, True, False) == k == LatentCache(tmp_path / "cache", "v1").key(img, 64, 64, True, False)
    assert asked == [1]


def test_weights_sha256_follows_the_weights():
    from trainer.encode import weights_sha256

    torch.manual_seed(0)
    a = torch.nn.Conv2d(3, 4, 3)
    b = torch.nn.Conv2d(3, 4, 3)
    b.load_state_dict(a.state_dict())
    assert weights_sha256(a) == weights_sha256(b)
    with torch.no_grad():
        b.weight[0, 0, 0, 0] += 1e-6
    assert weights_sha256(a) != weights_sha256(b)
    assert weights_sha256(a) != weights_sha256(a.to(torch.float64))
