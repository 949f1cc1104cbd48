"""Training masks and sampler schedules, on a small random model (no training needed)."""

from __future__ import annotations

import math

import pytest
import torch

from paperlab.paradiff.config import ModelConfig, SampleConfig
from paperlab.paradiff.errors import ParadiffConfigError
from paperlab.paradiff.model import BOI, EOI, MASK, NOIMG, PAD, Layout, ParaDiffModel
from paperlab.paradiff.sampler import sample
from paperlab.paradiff.tokens import condition_tokens, drop_condition
from paperlab.paradiff.train import mask_outputs

LAY = Layout()


@pytest.fixture(scope="module")
def rand_model() -> ParaDiffModel:
    torch.manual_seed(0)
    return ParaDiffModel(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64), LAY).eval()


def _cond(n: int) -> torch.Tensor:
    prompts = [["draw", "a", "big", "red", "circle", "at", "b2"]] * n
    gen = torch.Generator().manual_seed(n)
    codes = [None if i % 2 else torch.randint(0, LAY.codebook, (LAY.n_image,), generator=gen) for i in range(n)]
    return condition_tokens(LAY, prompts, codes)


def test_layout_brackets_and_modality_bias() -> None:
    x = LAY.skeleton(1)[0]
    assert x[LAY.in_image.start - 1] == BOI and x[LAY.in_image.stop] == EOI
    assert x[LAY.out_image.start - 1] == BOI and x[LAY.out_image.stop] == EOI
    assert (x[LAY.text] == MASK).all() and (x[LAY.out_image] == MASK).all()
    bias = LAY.modality_bias()
    assert torch.isinf(bias[LAY.out_image, : LAY.n_words]).all() and (bias[LAY.out_image, LAY.n_words:] == 0).all()
    assert torch.isinf(bias[LAY.text, LAY.n_words:]).all() and torch.isinf(bias[LAY.text, MASK]).all()


def test_training_masks_only_outputs_with_the_cosine_count() -> None:
    x0 = _cond(400)
    x0[:, LAY.out_image] = LAY.n_words + 3
    x0[:, LAY.text] = PAD
    x = mask_outputs(LAY, x0, [torch.Generator().manual_seed(i) for i in range(x0.shape[0])])
    masked = x == MASK
    assert not masked[:, : LAY.out_image.start].any()  # the condition is never masked
    n_img = masked[:, LAY.out_image].sum(1).float()
    n_txt = masked[:, LAY.text].sum(1).float()
    assert (n_img >= 1).all() and (n_txt >= 1).all()
    # E[floor(n cos(pi r / 2))] for r ~ U(0, 1) is about 2n/pi - 1/2
    assert abs(n_img.mean().item() - (2 * LAY.n_image / math.pi - 0.5)) < 2.5
    assert abs(n_txt.mean().item() - (2 * 16 / math.pi - 0.5)) < 1.0
    # the two modalities draw their own ratios
    assert abs(torch.corrcoef(torch.stack([n_img, n_txt]))[0, 1].item()) < 0.2


def test_condition_dropout_blanks_prompt_and_input_image_only() -> None:
    x = _cond(2)
    y = drop_condition(LAY, x, torch.tensor([True, False]))
    assert (y[0, LAY.prompt] == PAD).all() and (y[0, LAY.in_image] == NOIMG).all()
    assert torch.equal(y[1], x[1]) and torch.equal(y[0, LAY.out_image.start - 1:], x[0, LAY.out_image.start - 1:])


@pytest.mark.parametrize("sampler", ["parallel", "sequential", "image-only"])
def test_samplers_finish_with_nothing_masked(rand_model: ParaDiffModel, sampler: str) -> None:
    cfg = SampleConfig(steps=8, text_steps=4, image_steps=6)
    res = sample(rand_model, _cond(3), sampler, cfg, record=True)
    assert res.image.shape == (3, LAY.n_image) and (res.image >= 0).all()
    assert res.steps == {"parallel": 8, "sequential": 10, "image-only": 6}[sampler]
    assert res.trajectory is not None and len(res.trajectory) == res.steps
    if sampler == "image-only":
        assert (res.text == MASK).all()
    else:
        assert not (res.text == MASK).any()


def _release_transfer(total: int, steps: int) -> list[int]:
    """The release's get_num_transfer_tokens for one row, written out: words fixed at each step."""
    remaining, out = total, []
    for step in range(steps):
        target = int(total * (1 - (step + 1) / steps))
        out.append(max(0, remaining - target))
        remaining -= out[-1]
    return out


@pytest.mark.parametrize(("total", "steps"), [(16, 16), (16, 8), (16, 5), (16, 12), (7, 3)])
def test_text_schedule_is_the_releases(total: int, steps: int) -> None:
    from paperlab.paradiff.schedule import text_left

    left = [text_left(total, steps, s) for s in range(steps)]
    fixed = [a - b for a, b in zip([total, *left], left, strict=False)]
    assert fixed == _release_transfer(total, steps) and left[-1] == 0


def test_parallel_schedules_are_the_releases(rand_model: ParaDiffModel) -> None:
    """Text: one word a step for 16 words over 16 steps. Image: from step 16 // 4 on, progress
    counted from the first text step, max(1, min(masked - 1, floor(N cos(pi/2 (s + 1) / 16))))
    left masked after each update; the last one left masked takes its last draw."""
    cfg = SampleConfig(steps=16, image_steps=12)
    traj = sample(rand_model, _cond(2), "parallel", cfg, record=True).trajectory
    assert traj is not None
    text_done = [int((t[0] != MASK).sum()) for t in traj.texts]
    assert text_done == list(range(1, 17))
    img_left = [int((i[0] < 0).sum()) for i in traj.images]
    assert img_left[:4] == [LAY.n_image] * 4
    masked = LAY.n_image
    for s in range(4, 16):
        masked = max(1, min(masked - 1, math.floor(LAY.n_image * math.cos(math.pi / 2 * (s + 1) / 16))))
        assert img_left[s] == (0 if s == 15 else masked), s
    # counted over the image updates only (the other origin): the first update commits one code
    img = sample(rand_model, _cond(1), "parallel", cfg.model_copy(update={"schedule_origin": "image"}),
                 record=True).trajectory
    assert img is not None and int((img.images[4][0] >= 0).sum()) == 1


def test_image_updates_spread_over_the_parallel_steps_as_released() -> None:
    from paperlab.paradiff.schedule import parallel_image_steps

    assert parallel_image_steps(16, 12, 0.25) == list(range(4, 16))
    assert parallel_image_steps(128, 64, 0.25) == sorted({round(32 + 95 * j / 63) for j in range(64)})
    assert parallel_image_steps(16, 4, 0.25) == [4, 8, 11, 15]
    assert parallel_image_steps(8, 20, 0.25) == list(range(2, 8))  # more updates than steps: once a step


@pytest.mark.parametrize("sampler", ["parallel", "sequential", "image-only"])
def test_the_last_code_is_its_draw_or_random_as_configured(rand_model: ParaDiffModel, sampler: str) -> None:
    """The release keeps one code masked after the last update: MMaDA-Parallel-M returns its draw,
    -A a uniform random code. The two rules differ in that one code of each row only."""
    cfg = SampleConfig(steps=8, text_steps=4, image_steps=6)
    draw = sample(rand_model, _cond(6), sampler, cfg, seed=5)
    rand = sample(rand_model, _cond(6), sampler, cfg.model_copy(update={"last_code": "random"}), seed=5)
    assert torch.equal(draw.text, rand.text)
    differ = (draw.image != rand.image).sum(1)
    assert (differ <= 1).all() and differ.sum() >= 5


@pytest.mark.parametrize("schedule", ["cosine", "linear", "pow2"])
def test_mask_schedules(schedule: str) -> None:
    from paperlab.paradiff.schedule import mask_share

    shares = [mask_share(schedule, t / 10) for t in range(11)]
    assert shares[0] == 1.0 and shares[-1] < 1e-5 and all(a > b for a, b in zip(shares, shares[1:], strict=False))
    assert {"cosine": 0.7071, "linear": 0.5, "pow2": 0.75}[schedule] == pytest.approx(shares[5], abs=1e-4)


def test_sequential_draws_only_after_the_text_is_done(rand_model: ParaDiffModel) -> None:
    cfg = SampleConfig(text_steps=5, image_steps=4)
    traj = sample(rand_model, _cond(1), "sequential", cfg, record=True).trajectory
    assert traj is not None
    for k in range(5):
        assert (traj.images[k] < 0).all()
    assert not (traj.texts[4] == MASK).any()


def test_a_batch_decodes_each_row_as_if_alone(rand_model: ParaDiffModel) -> None:
    """Greedy, noise-free decoding: batching must not change any row (no leaks across rows)."""
    cfg = SampleConfig(steps=6, temperature=0.0, noise=0.0, guidance=2.0, text_guidance=1.0)
    cond = _cond(5)
    together = sample(rand_model, cond, "parallel", cfg)
    for i in range(5):
        alone = sample(rand_model, cond[i:i + 1], "parallel", cfg)
        assert torch.equal(alone.text[0], together.text[i]) and torch.equal(alone.image[0], together.image[i])


@pytest.mark.parametrize("sampler", ["parallel", "sequential", "image-only"])
def test_a_sampled_batch_equals_each_prompt_sampled_alone(rand_model: ParaDiffModel, sampler: str) -> None:
    """With sampling on (codes and words drawn, Gumbel noise, guidance), row i of a batch decoded
    with seed s is what decoding prompt i alone with seed s + i gives, whatever the chunking."""
    cfg = SampleConfig(steps=6, text_steps=4, image_steps=5, text_temperature=1.0, text_guidance=1.0, chunk=3)
    cond = _cond(9)  # 9 rows: guidance's unconditional rows get their own call
    together = sample(rand_model, cond, sampler, cfg, seed=40)
    unchunked = sample(rand_model, cond, sampler, cfg.model_copy(update={"chunk": 0}), seed=40)
    assert torch.equal(together.image, unchunked.image) and torch.equal(together.text, unchunked.text)
    for i in range(9):
        alone = sample(rand_model, cond[i:i + 1], sampler, cfg, seed=40 + i)
        assert torch.equal(alone.text[0], together.text[i]) and torch.equal(alone.image[0], together.image[i])
    # and the rows really are drawn: the same prompt under other seeds gives other images
    same = condition_tokens(LAY, [["draw", "a", "big", "red", "circle", "at", "b2"]] * 6, [None] * 6)
    res = sample(rand_model, same, sampler, cfg, seed=0)
    assert len({tuple(r.tolist()) for r in res.image}) > 1


def test_row_uniforms_are_uniform_and_batch_free() -> None:
    from paperlab.paradiff.sampler import uniforms

    u = uniforms(torch.arange(1000), step=3, stream=1, width=64)
    assert u.shape == (1000, 64) and u.min() > 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    assert torch.equal(u[17:18], uniforms(torch.tensor([17]), step=3, stream=1, width=64))
    assert not torch.equal(u, uniforms(torch.arange(1000), step=4, stream=1, width=64))
    assert abs(torch.corrcoef(torch.stack([u[:, 0], u[:, 1]]))[0, 1].item()) < 0.1


def test_same_seed_same_samples(rand_model: ParaDiffModel) -> None:
    cfg = SampleConfig(steps=6)
    cond = _cond(2)
    a, b = (sample(rand_model, cond, "parallel", cfg, seed=7) for _ in range(2))
    assert torch.equal(a.image, b.image) and torch.equal(a.text, b.text)


def test_unknown_sampler(rand_model: ParaDiffModel) -> None:
    with pytest.raises(ParadiffConfigError, match="choose one of"):
        sample(rand_model, _cond(1), "joint", SampleConfig())


def test_cache_keys_follow_every_config_and_code_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale tiny model must never be reused: the model's key moves with the VQ's config and
    training-code version, the model and training configs, and the architecture version."""
    from paperlab.paradiff import train, vq
    from paperlab.paradiff.config import get_preset

    cfg = get_preset("tiny")
    base = train.model_hash(cfg)
    assert train.model_hash(cfg.with_overrides(**{"sample.guidance": 0.0})) == base  # sampling only
    for field, value in (("vq.steps", 301), ("model.d_model", 96), ("train.steps", 10), ("train.lr", 1e-4)):
        assert train.model_hash(cfg.with_overrides(**{field: value})) != base, field
    vq_key = vq.vq_hash(cfg.vq)
    monkeypatch.setattr(vq, "VQ_VERSION", vq.VQ_VERSION + 1)
    assert vq.vq_hash(cfg.vq) != vq_key and train.model_hash(cfg) != base
    monkeypatch.undo()
    monkeypatch.setattr(train, "ARCH_VERSION", train.ARCH_VERSION + 1)
    assert train.model_hash(cfg) != base


def test_prefix_attention_keeps_the_condition_blind_to_the_outputs() -> None:
    """Under prefix attention the condition's keys and values ignore the outputs (so a sampler
    may compute them once), while the outputs still see the condition."""
    torch.manual_seed(0)
    rand_model = ParaDiffModel(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, attention="prefix"), LAY).eval()
    x = _cond(3)
    y = x.clone()
    y[:, LAY.text] = 7  # other output words
    y[:, LAY.out_image] = LAY.n_words + 3
    for (k1, v1), (k2, v2) in zip(rand_model.condition_cache(x).kv, rand_model.condition_cache(y).kv, strict=True):
        c = LAY.condition
        assert torch.equal(k1[:, :, c], k2[:, :, c]) and torch.equal(v1[:, :, c], v2[:, :, c])
    other_prompt = condition_tokens(LAY, [["draw", "a", "small", "blue", "square", "at", "c3"]] * 3, [None] * 3)
    assert not torch.allclose(rand_model.output_logits(x)[1], rand_model.output_logits(other_prompt)[1])


@pytest.mark.parametrize(("guided", "rows"), [(False, 5), (True, 5), (True, 9)])
def test_cached_condition_gives_the_uncached_logits(guided: bool, rows: int) -> None:
    """One step's logits through the condition cache (chunked, with the shared blank condition for
    guidance, in one call or, from 8 rows, with the unconditional rows in their own) equal the full
    masked forward pass, at a partly decoded state. Two layers: with one,
    the condition's keys could not depend on the outputs even without the prefix mask."""
    from paperlab.paradiff.sampler import _DecodeCaches, _logits

    torch.manual_seed(1)
    rand_model = ParaDiffModel(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, attention="prefix"),
                               LAY).eval()
    x = _cond(rows)
    gen = torch.Generator().manual_seed(1)
    x[:, LAY.out_image] = torch.where(torch.rand(rows, LAY.n_image, generator=gen) < 0.5, MASK,
                                      LAY.n_words + torch.randint(0, LAY.codebook, (rows, LAY.n_image), generator=gen))
    x[:, LAY.text.start: LAY.text.start + 3] = 9
    with torch.no_grad():
        cache = _DecodeCaches(rand_model, x, guided)
        t1, i1 = _logits(rand_model, x, 4.0 if guided else 0.0, 1.5 if guided else 0.0, True, chunk=2, cache=cache)
        t0, i0 = _logits(rand_model, x, 4.0 if guided else 0.0, 1.5 if guided else 0.0, True, chunk=0, cache=None)
    finite = torch.isfinite(t0)
    assert torch.equal(finite, torch.isfinite(t1))
    assert torch.allclose(t1[finite], t0[finite], atol=1e-5) and torch.allclose(i1, i0, atol=1e-5)


@pytest.mark.parametrize("rows", [3, 9])
def test_guidance_is_the_release_formula_on_each_modality(rows: int) -> None:
    """cond + g (cond - uncond), uncond = the condition dropped: g = guidance on the image logits,
    text_guidance on the text logits (a word a position may not hold stays -inf)."""
    from paperlab.paradiff.sampler import _logits

    torch.manual_seed(3)
    model = ParaDiffModel(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, attention="full"), LAY).eval()
    x = _cond(rows)
    with torch.no_grad():
        tc, ic = model.output_logits(x)
        tu, iu = model.output_logits(drop_condition(LAY, x))
        t, i = _logits(model, x, 4.0, 0.5, True)
        t_off, i_off = _logits(model, x, 4.0, 0.0, True)
    assert torch.allclose(i, ic + 4.0 * (ic - iu), atol=1e-4) and torch.allclose(i_off, i, atol=1e-5)
    fin = torch.isfinite(tc)
    assert torch.equal(fin, torch.isfinite(t)) and not torch.isnan(t).any()
    assert torch.allclose(t[fin], (tc + 0.5 * (tc - tu))[fin], atol=1e-4)
    assert torch.allclose(t_off[fin], tc[fin], atol=1e-5)


def test_full_attention_is_the_default_and_samples_without_a_cache() -> None:
    torch.manual_seed(0)
    full = ParaDiffModel(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64), LAY).eval()
    assert not full.cacheable and full.attn_mask is None
    with pytest.raises(ValueError, match="prefix"):
        full.condition_cache(_cond(1))
    res = sample(full, _cond(2), "parallel", SampleConfig(steps=4))
    assert not (res.text == MASK).any() and (res.image >= 0).all()


def test_skipping_a_modality_leaves_the_other_logits_unchanged() -> None:
    """A step that needs only text (or only image) logits skips the other's positions in the last
    block; what it returns equals the full call, cached or not, and decoding is unchanged by it
    (a recorded trajectory computes both every step)."""
    torch.manual_seed(2)
    model = ParaDiffModel(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, attention="prefix"), LAY).eval()
    x = _cond(3)
    x[:, LAY.text.start: LAY.text.start + 4] = 11
    with torch.no_grad():
        for cache in (None, model.condition_cache(x)):
            text, img = model.output_logits(x, cache)
            t_only, no_img = model.output_logits(x, cache, image=False)
            no_text, i_only = model.output_logits(x, cache, text=False)
            assert no_img.shape[1] == 0 and no_text.shape[1] == 0
            fin = torch.isfinite(text)
            assert torch.allclose(t_only[fin], text[fin], atol=1e-5) and torch.allclose(i_only, img, atol=1e-5)
        with pytest.raises(ValueError):
            model.output_logits(x, text=False, image=False)
    cfg = SampleConfig(steps=6, text_steps=4, image_steps=5, text_temperature=1.0, chunk=2)
    for sampler in ("parallel", "sequential", "image-only"):
        plain = sample(model, _cond(5), sampler, cfg, seed=3)
        recorded = sample(model, _cond(5), sampler, cfg, seed=3, record=True)
        assert torch.equal(plain.text, recorded.text) and torch.equal(plain.image, recorded.image)
