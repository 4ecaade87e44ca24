#include "host/session/endless.h"

#include <algorithm>
#include <string>

namespace snapvk {

bool compacts_again(KvPolicy p) {
  return p == KvPolicy::SnapKV || p == KvPolicy::PyramidKV || p == KvPolicy::StreamingLLM;
}

EndlessChat::EndlessChat(const Model& model, const SessionOptions& opts) : session_(model, opts), cs_(model.ctx()) {
  const ModelConfig& c = model.config();
  Context& ctx = model.ctx();
  const SessionOptions& o = session_.options();  // n_ctx defaulted
  const KvPolicyOptions& kv = o.kv;
  if (!compacts_again(kv.policy))
    throw Error(ErrorKind::InvalidArgument,
                std::string("an endless chat compacts with snapkv, pyramidkv or streamingllm, not ") +
                    kv_policy_name(kv.policy),
                opt::kv_policy);
  if (kv.budget == 0)
    throw Error(ErrorKind::InvalidArgument, "an endless chat needs a KV budget (entries per head), not a ratio",
                opt::kv_budget);
  if (kv.budget >= o.n_ctx)
    throw Error(ErrorKind::InvalidArgument,
                "the KV budget " + std::to_string(kv.budget) + " leaves no room for a turn in a context of " +
                    std::to_string(o.n_ctx) + " entries per head",
                opt::n_ctx);
  const uint64_t W = kv.window, qrow = uint64_t(c.q_dim()) * 4;
  const uint64_t rows = uint64_t(c.n_head_kv) * o.n_ctx;
  q_ring_ = Buffer(ctx, c.n_layer * W * qrow, BufferKind::Device, "endless_q_ring");
  q_win_ = Buffer(ctx, W * qrow, BufferKind::Device, "endless_q_window");
  scratch_k_ = Buffer(ctx, rows * kv_row_bytes(o.kv_type_k, c.head_dim), BufferKind::Device, "endless_k");
  scratch_v_ = Buffer(ctx, rows * kv_row_bytes(o.kv_type_v, c.head_dim), BufferKind::Device, "endless_v");
  scratch_heads_ = Buffer(ctx, 8ull * c.n_head_kv, BufferKind::Device, "endless_heads");
  session_.fix_cache_rows();
  session_.set_query_sink(QuerySink{&q_ring_, kv.window});
}

bool EndlessChat::end_turn() {
  KvCache& cache = session_.cache_to_compact();
  if (cache.empty()) return false;
  const KvPolicyOptions& kv = session_.options().kv;
  const uint32_t n_past = session_.n_past(), appended = n_past - cache.compacted_len();
  if (cache.max_len(appended) <= kv.budget) return false;
  const ModelConfig& c = session_.model().config();
  // the voters: the last positions whose queries the ring holds (fewer than W right after a
  // pack was loaded: its queries are not in the pack)
  const uint32_t W = kv.window, n_q = std::min(session_.queries_held(), W);
  if (n_q == 0) return false;
  const uint64_t qrow = uint64_t(c.q_dim()) * 4;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    if (c.is_swa(l)) continue;
    // the window's queries in position order (the ring holds position p at row p % W)
    const uint64_t layer0 = uint64_t(l) * W * qrow;
    cs_.begin();
    for (uint32_t i = 0; i < n_q; ++i)
      cs_.copy(q_ring_, layer0 + ((n_past - n_q + i) % W) * qrow, q_win_, i * qrow, qrow);
    cs_.submit();
    cache.recompress_layer(cs_, l, appended, q_win_, n_q, kv, scratch_k_, scratch_v_, scratch_heads_);
  }
  cache.end_recompress(n_past);
  return true;
}

}  // namespace snapvk
