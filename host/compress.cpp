// Compaction of one layer's KV cache at the end of its prefill (docs/snapkv.md, steps 3-7):
// window scores, pooling, top-K selection and the gather into the session's cache, all on the
// GPU. Only the heads table of Ada-KV (a few integers) and, when asked, the selection for
// reports come back to the host.
#include <algorithm>
#include <cmath>
#include <string>

#include "host/session.h"
#include "runtime/vk_check.h"

namespace snapvk {

void Session::compress_layer(uint32_t l, uint32_t L, const Buffer& full_k, const Buffer& full_v,
                             const Buffer& full_heads, const Buffer& q_win, uint32_t n_q) {
  const ModelConfig& c = model_.config();
  Context& ctx = model_.ctx();
  const Kernels& k = model_.kernels();
  const AttentionKernels& ak = model_.attention();
  const KvPolicyOptions& pol = opts_.kv;
  const KvType kt = cache_.type;
  const uint32_t n_kv = c.n_head_kv, room = cache_.room;
  const uint32_t C = pol.layer_budgets(L, c.n_layer)[l];
  const bool compress = L > C;
  const uint32_t W = compress ? std::min(pol.window, L) : L;  // uncompressed: every position is "window"
  const uint32_t P = L - W;                                    // prefix positions that compete
  const uint32_t count = compress ? C - W : 0;                 // selected prefix entries per head (uniform)
  const float scale = 1.0f / std::sqrt(float(c.head_dim));
  const uint32_t row_words = kv_row_words(kt, c.head_dim);
  const bool ada = compress && pol.policy == KvPolicy::AdaKV;

  KvLayer& out = cache_.layers[l];
  const uint32_t per_head = (compress ? C : L) + room;  // uniform slots per head
  out.slots = n_kv * per_head;
  out.k = Buffer(ctx, uint64_t(out.slots) * row_words * 4, BufferKind::Device, "k_cache." + std::to_string(l));
  out.v = Buffer(ctx, uint64_t(out.slots) * row_words * 4, BufferKind::Device, "v_cache." + std::to_string(l));
  out.heads = Buffer(ctx, 2ull * n_kv * 4, BufferKind::Device, "kv_heads." + std::to_string(l));
  cache_.bytes += 2ull * out.slots * row_words * 4;
  out.offset.resize(n_kv);
  out.base.resize(n_kv);
  std::vector<uint32_t> table(2 * n_kv), info(2 * n_kv);
  for (uint32_t h = 0; h < n_kv; ++h) {
    out.offset[h] = table[2 * h] = h * per_head;
    out.base[h] = table[2 * h + 1] = compress ? C : L;
    info[2 * h] = h * count;  // where head h's positions start in sel
    info[2 * h + 1] = 0;      // subtracted from them (Ada-KV selects in [n_kv][P] space)
  }
  if (!ada) out.heads.upload(table.data(), table.size() * 4);

  // Scratch of this layer's selection.
  const uint32_t total = ada ? n_kv * count : std::max(1u, n_kv * count);
  Buffer sel(ctx, std::max<uint64_t>(total, 1) * 4, BufferKind::Device, "kv_sel");
  Buffer sel_info(ctx, info.size() * 4, BufferKind::Device, "kv_sel_info");
  sel_info.upload(info.data(), info.size() * 4);
  Buffer stats, votes, pooled, floor_sel;

  CommandStream& cs = cs_compress_;
  cs.begin();
  if (compress && pol.policy == KvPolicy::StreamingLLM) {
    // the first `sinks` positions and the most recent ones before the window
    std::vector<uint32_t> s(total);
    const uint32_t sinks = std::min(pol.sinks, count);
    for (uint32_t h = 0; h < n_kv; ++h)
      for (uint32_t i = 0; i < count; ++i) s[h * count + i] = i < sinks ? i : P - (count - i);
    sel.upload(s.data(), s.size() * 4);
  } else if (compress) {
    stats = Buffer(ctx, uint64_t(c.n_head) * n_q * 2 * 4, BufferKind::Device, "kv_stats");
    votes = Buffer(ctx, uint64_t(n_kv) * P * 4, BufferKind::Device, "kv_votes");
    // votes[h][j] = agg over the group's heads of sum over voting queries of softmax(q k^T / sqrt(d))[j]
    op_window_stats(cs, k, ak, kt, q_win, full_k, full_heads, stats, L, n_q, c.n_head, n_kv, scale);
    cs.barrier();
    op_window_votes(cs, k, ak, kt, q_win, full_k, stats, votes, full_heads, L, n_q, P, c.n_head, n_kv, scale, pol.gqa);
    cs.barrier();
    const Buffer* scores = &votes;
    if (pol.policy != KvPolicy::H2O) {
      // pooled = pool1d(votes): neighbours of strong positions come along
      pooled = Buffer(ctx, uint64_t(n_kv) * P * 4, BufferKind::Device, "kv_pooled");
      op_pool(cs, k, ak, votes, pooled, P, n_kv, pol.kernel, pol.avg_pool);
      cs.barrier();
      scores = &pooled;
    }
    if (!ada) {
      // sel[h] = the top (C - W) prefix positions of head h, ascending
      op_topk(cs, k, ak, *scores, sel, n_kv, P, count);
      cs.barrier();
    } else {
      // Ada-KV: each head's own top floor(share * budget) first, then one selection across the layer
      const uint32_t floor_count = std::min<uint32_t>(uint32_t(pol.adakv_floor * count), count);
      if (floor_count > 0) {
        floor_sel = Buffer(ctx, uint64_t(n_kv) * floor_count * 4, BufferKind::Device, "kv_floor_sel");
        op_topk(cs, k, ak, *scores, floor_sel, n_kv, P, floor_count);
        cs.barrier();
        op_adakv_floor(cs, k, ak, *scores, floor_sel, P, n_kv, floor_count);
        cs.barrier();
      }
      op_topk(cs, k, ak, *scores, sel, 1, n_kv * P, total);
      cs.barrier();
      op_adakv_layout(cs, k, ak, sel, out.heads, sel_info, n_kv, P, total, W, room);
      cs.barrier();
    }
  }
  // compacted cache = the selected rows, then the window
  const uint32_t max_slots = ada ? std::min(P, total) + W : (compress ? C : L);
  op_kv_gather(cs, k, ak, full_k, full_v, out.k, out.v, sel, sel_info, out.heads, n_kv, row_words, max_slots, L, P, W);
  cs.submit();

  if (ada) {  // per-head budgets were decided on the GPU: the host needs them to size decode
    out.heads.download(table.data(), table.size() * 4);
    for (uint32_t h = 0; h < n_kv; ++h) out.offset[h] = table[2 * h], out.base[h] = table[2 * h + 1];
  }
  if (opts_.keep_selection) {
    std::vector<uint32_t> s(total);
    if (compress) sel.download(s.data(), s.size() * 4);
    sel_info.download(info.data(), info.size() * 4);
    auto& layer_sel = selection_[l];
    layer_sel.assign(n_kv, {});
    for (uint32_t h = 0; h < n_kv; ++h) {
      const uint32_t n_sel = out.base[h] - W;
      for (uint32_t i = 0; i < n_sel; ++i) layer_sel[h].push_back(s[info[2 * h] + i] - info[2 * h + 1]);
      for (uint32_t p = P; p < L; ++p) layer_sel[h].push_back(p);
    }
  }
  for (const auto& t : cs.timings()) {
    if (t.name == "window_scores") last_.score_ms = t.total_ms;
    else if (t.name == "pool") last_.pool_ms = t.total_ms;
    else if (t.name == "topk_select") last_.select_ms = t.total_ms;
    else if (t.name == "kv_gather") last_.gather_ms = t.total_ms;
  }
}

}  // namespace snapvk
