"""The causal transformer: teacher-forced == cached step path, causality, flat memory, NTK."""

import torch

from model.transformer import CausalTransformer, KVCache, TransformerConfig


def _model(**kw) -> CausalTransformer:
    torch.manual_seed(0)
    c = TransformerConfig(**{"d_model": 64, "n_layers": 2, "n_heads": 4, "mlp_hidden": 128,
                             "train_context": 64, "window": 40, "sink": 2, **kw})
    return CausalTransformer(c).eval()


def test_step_path_equals_teacher_forced_forward():
    m = _model()
    x = torch.randn(2, 42, 64)  # exactly sink + window tokens
    with torch.no_grad():
        full = m(x)
        with m.streaming(batch_size=2):
            # every step also runs a second, uncommitted branch (as CFG does): it must not leak
            steps = [m.step(torch.stack((x[:, i], torch.randn(2, 64)), 1), commit=0)[:, 0] for i in range(42)]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=2e-5, rtol=1e-4)


def test_uncommitted_branch_sees_the_same_past():
    """A branch evaluated beside the committed one equals running that token alone."""
    m = _model()
    xs = torch.randn(1, 10, 64)
    probe = torch.randn(1, 64)
    with torch.no_grad():
        with m.streaming():
            for i in range(9):
                m.step(xs[:, i : i + 1])
            both = m.step(torch.stack((xs[:, 9], probe), 1), commit=0)
        full = m(torch.cat((xs[:, :9], probe[:, None]), 1))
    torch.testing.assert_close(both[:, 1], full[:, -1], atol=2e-5, rtol=1e-4)


def test_causality_future_tokens_never_change_the_past():
    m = _model()
    x = torch.randn(1, 30, 64)
    y = x.clone()
    y[:, 20:] = torch.randn(1, 10, 64)
    with torch.no_grad():
        a, b = m(x), m(y)
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert (a[:, 20:] - b[:, 20:]).abs().max() > 1e-3


def test_window_wraps_with_flat_memory_and_bounded_positions():
    m = _model(window=16, sink=1, train_context=18)
    with torch.no_grad(), m.streaming() as cache:
        ptrs = (cache.k.data_ptr(), cache.v.data_ptr())
        for _ in range(500):
            out = m.step(torch.randn(1, 2, 64))
            assert torch.isfinite(out).all()
        assert (cache.k.data_ptr(), cache.v.data_ptr()) == ptrs
        assert cache.valid.all() and cache.n_seen == 500
        torch.testing.assert_close(cache.k[:, :, 0], cache.k[:, :, 1])  # branches hold the committed keys


def test_after_wrap_step_equals_reference_over_sink_and_window():
    """Beyond the window the cached step equals attention over the sink + the newest `window`
    tokens at cache positions (sink 0, survivors 2 … cache_len-1, query cache_len).  One layer
    makes this reference exact: its keys depend only on the inputs."""
    from model.transformer import apply_rope

    c = TransformerConfig(d_model=32, n_layers=1, n_heads=2, mlp_hidden=64, train_context=10, window=8, sink=1)
    torch.manual_seed(1)
    m = CausalTransformer(c).eval()
    xs = torch.randn(1, 25, 32)
    with torch.no_grad():
        with m.streaming():
            for i in range(24):
                m.step(xs[:, i : i + 1])
            last = m.step(xs[:, 24:25])[:, 0]
        kept = torch.cat((xs[:, :1], xs[:, 25 - 8 : 25]), 1)  # sink + 7 survivors + the query token
        pos = torch.tensor([0, *range(2, 10)])
        block = m.blocks[0]
        q, k, v = block._qkv(kept)
        cos, sin = m.rope_cos[pos], m.rope_sin[pos]  # the teacher-forced tables
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        att = torch.nn.functional.scaled_dot_product_attention(q[:, :, -1:], k, v)
        ref = m.norm(block._out(kept[:, -1:], att))[:, 0]
    torch.testing.assert_close(last, ref, atol=2e-5, rtol=1e-4)


def test_ntk_scaling_only_beyond_training_context():
    assert TransformerConfig(train_context=480, window=478, sink=1).effective_rope_base == 10_000.0
    long = TransformerConfig(train_context=480, window=1918, sink=1)
    assert long.effective_rope_base > 10_000.0


def test_kv_cache_reset_clears_everything():
    c = TransformerConfig(d_model=32, n_layers=1, n_heads=2, mlp_hidden=64, window=4, sink=1)
    cache = KVCache(c, batch_size=1, device="cpu", dtype=torch.float32)
    cache.k.fill_(1)
    cache.valid[:3] = True
    cache.n_seen = 3
    cache.reset()
    assert cache.n_seen == 0 and not cache.valid.any() and cache.k.abs().sum() == 0


def test_the_streaming_step_is_one_graph_and_compiles_to_the_same_stream():
    """The step reads nothing back to the host (slot, position and sink rotation are computed on
    the device): dynamo captures it whole, with CFG's two branches and without, and the captured
    step (fullgraph, functionalised) streams exactly what the eager one does past the ring's wrap."""
    m = _model(window=16, sink=1, train_context=18)
    xs = torch.randn(40, 1, 2, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for g in (1, 2):
            with m.streaming():
                explained = torch._dynamo.explain(m.step)(xs[0, :, :g])
            assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
        torch._dynamo.reset()
        compiled = torch.compile(m.step, fullgraph=True, dynamic=False, backend="aot_eager")
        outs = {}
        for name, step in (("eager", m.step), ("compiled", compiled)):
            with m.streaming() as cache:
                outs[name] = torch.stack([step(x[:, : 1 + i % 2], commit=0)[:, 0] for i, x in enumerate(xs)])
                assert cache.n_seen == len(xs)
        torch._dynamo.reset()
    torch.testing.assert_close(outs["compiled"], outs["eager"], atol=1e-5, rtol=1e-5)
