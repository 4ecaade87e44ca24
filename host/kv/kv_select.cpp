// The policies' selections of one layer (docs/snapkv.md, steps 3-6), all on the GPU: window
// scores, GQA aggregation, pooling and top-K; StreamingLLM's fixed choice is uploaded.
#include "host/kv/kv_select.h"

#include <algorithm>
#include <cmath>

#include "host/kv/kv_cache.h"
#include "runtime/vk_check.h"

namespace snapvk {

namespace {

// sel for `total` entries and the uniform info table: head h's positions start at h * count.
LayerSelection uniform_selection(const SelectArgs& a, uint32_t total) {
  const uint32_t n_kv = a.model.config().n_head_kv;
  Context& ctx = a.model.ctx();
  LayerSelection s;
  s.total = total;
  s.max_rows = a.count + a.W;
  s.sel = Buffer(ctx, std::max<uint64_t>(total, 1) * 4, BufferKind::Device, "kv_sel");
  std::vector<uint32_t> info(2 * n_kv);
  for (uint32_t h = 0; h < n_kv; ++h) info[2 * h] = h * a.count, info[2 * h + 1] = 0;
  s.info = Buffer(ctx, info.size() * 4, BufferKind::Device, "kv_sel_info");
  s.info.upload(info.data(), info.size() * 4);
  s.scratch.reserve(6);  // scores() hands out pointers into it
  return s;
}

// votes[h][j] = agg over the group's heads of sum over voting queries of softmax(q k^T * scale)[j]
// (the model's attention scale),
// then (KvPolicyOptions::pools) pooled = pool1d(votes), so neighbours of strong positions come along, and (when the
// prompt's words are known) each position takes the best score of its word, so a kept piece of a
// word or number brings the rest of it.
const Buffer& scores(const SelectArgs& a, LayerSelection& s) {
  const ModelConfig& c = a.model.config();
  Context& ctx = a.model.ctx();
  const Kernels& k = a.model.kernels();
  const AttentionKernels& ak = a.model.attention();
  const PromptLayer& p = a.prompt;
  const uint32_t n_kv = c.n_head_kv;
  const float scale = c.attention_scale();
  Buffer& stats = s.scratch.emplace_back(ctx, uint64_t(c.n_head) * p.n_q * 2 * 4, BufferKind::Device, "kv_stats");
  Buffer& votes = s.scratch.emplace_back(ctx, uint64_t(n_kv) * a.P * 4, BufferKind::Device, "kv_votes");
  // each query head's sums between passes, when the voting queries take more than one
  const bool passes = window_votes_passes(ak, p.n_q) > 1;
  const Buffer& sums =
      passes ? s.scratch.emplace_back(ctx, uint64_t(c.n_head) * a.P * 4, BufferKind::Device, "kv_vote_sums") : votes;
  op_window_stats(a.cs, k, ak, a.k_type, p.q_win, p.k, p.heads, stats, p.L, p.n_q, c.n_head, n_kv, scale);
  a.cs.barrier();
  op_window_votes(a.cs, k, ak, a.k_type, p.q_win, p.k, stats, votes, p.heads, sums, p.L, p.n_q, a.P, c.n_head, n_kv,
                  scale, a.pol.gqa);
  a.cs.barrier();
  if (!a.pol.pools()) return votes;
  Buffer& pooled = s.scratch.emplace_back(ctx, uint64_t(n_kv) * a.P * 4, BufferKind::Device, "kv_pooled");
  op_pool(a.cs, k, ak, votes, pooled, a.P, n_kv, a.pol.kernel, a.pol.pool == KvPool::Avg, a.pol.pool_ahead);
  a.cs.barrier();
  if (!a.pol.completes_words() || !p.words) return pooled;
  Buffer& words = s.scratch.emplace_back(ctx, uint64_t(n_kv) * a.P * 4, BufferKind::Device, "kv_words");
  op_complete_words(a.cs, k, ak, pooled, *p.words, words, a.P, n_kv, a.pol.complete_words);
  a.cs.barrier();
  return words;
}

}  // namespace

// sel[h] = the top `count` prefix positions of head h, ascending (H2O's votes are not pooled)
LayerSelection select_top_per_head(const SelectArgs& a) {
  const uint32_t n_kv = a.model.config().n_head_kv;
  LayerSelection s = uniform_selection(a, std::max(1u, n_kv * a.count));
  const Buffer& sc = scores(a, s);
  op_topk(a.cs, a.model.kernels(), a.model.attention(), sc, s.sel, n_kv, a.P, a.count);
  a.cs.barrier();
  return s;
}

LayerSelection select_streamingllm(const SelectArgs& a) {
  const uint32_t n_kv = a.model.config().n_head_kv;
  LayerSelection s = uniform_selection(a, std::max(1u, n_kv * a.count));
  std::vector<uint32_t> pos(s.total);
  const uint32_t sinks = std::min(a.pol.sinks, a.count);
  for (uint32_t h = 0; h < n_kv; ++h)
    for (uint32_t i = 0; i < a.count; ++i) pos[h * a.count + i] = i < sinks ? i : a.P - (a.count - i);
  s.sel.upload(pos.data(), pos.size() * 4);
  return s;
}

LayerSelection select_adakv(const SelectArgs& a) {
  const uint32_t n_kv = a.model.config().n_head_kv;
  const Kernels& k = a.model.kernels();
  const AttentionKernels& ak = a.model.attention();
  // sel holds positions in [n_kv][P] space: one selection across the layer
  LayerSelection s = uniform_selection(a, n_kv * a.count);
  s.max_rows = std::min(a.P, s.total) + a.W;
  s.layout_on_device = true;
  const Buffer& sc = scores(a, s);
  // each head's own top floor(share * budget) first
  const uint32_t floor_count = std::min<uint32_t>(uint32_t(a.pol.adakv_floor * a.count), a.count);
  if (floor_count > 0) {
    Buffer& floor_sel =
        s.scratch.emplace_back(a.model.ctx(), uint64_t(n_kv) * floor_count * 4, BufferKind::Device, "kv_floor_sel");
    op_topk(a.cs, k, ak, sc, floor_sel, n_kv, a.P, floor_count);
    a.cs.barrier();
    op_adakv_floor(a.cs, k, ak, sc, floor_sel, a.P, n_kv, floor_count);
    a.cs.barrier();
  }
  // then the best of the rest across every head; the heads table follows from the counts
  op_topk(a.cs, k, ak, sc, s.sel, 1, n_kv * a.P, s.total);
  a.cs.barrier();
  op_adakv_layout(a.cs, k, ak, s.sel, a.out.heads, s.info, n_kv, a.P, s.total, a.W, a.room);
  a.cs.barrier();
  return s;
}

LayerSelection select_for(const SelectArgs& a) {
  switch (a.pol.policy) {
    case KvPolicy::SnapKV:
    case KvPolicy::PyramidKV:
    case KvPolicy::H2O: return select_top_per_head(a);
    case KvPolicy::StreamingLLM: return select_streamingllm(a);
    case KvPolicy::AdaKV: return select_adakv(a);
    case KvPolicy::Full: break;
  }
  return select_all(a);
}

LayerSelection select_all(const SelectArgs& a) {
  LayerSelection s = uniform_selection(a, 1);
  s.max_rows = a.W;
  return s;
}

}  // namespace snapvk
