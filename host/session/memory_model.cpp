#include "host/session/memory_model.h"

#include <algorithm>

#include "runtime/checked.h"

namespace snapvk {

void check_session_shape(const ModelConfig& c, uint32_t n_ctx, uint32_t n_batch) {
  checked_range(n_ctx, 1, kMaxContext, "n_ctx", ErrorKind::InvalidArgument, opt::n_ctx);
  // Rows of one layer's cache are counted, and heads-table offsets stored, in 32 bits.
  checked_mul_u32(c.n_head_kv, n_ctx, "KV rows per layer n_head_kv * n_ctx");
  // Element counts of one batch's activations are 32-bit push constants (op_add, op_swiglu, ...).
  const uint64_t B = std::min(n_batch, n_ctx);
  checked_mul_u32(B, c.n_embd, "activations n_batch * n_embd");
  checked_mul_u32(B, uint64_t(c.n_head) * c.head_dim, "activations n_batch * q_dim");
  checked_mul_u32(B, uint64_t(c.n_head_kv) * c.head_dim, "activations n_batch * kv_dim");
  checked_mul_u32(B, c.n_ff, "activations n_batch * n_ff");
}

uint64_t activation_bytes(const ModelConfig& c, uint32_t n_batch, uint32_t n_ctx, uint32_t decode_chunk) {
  if (decode_chunk == 0) throw Error(ErrorKind::InvalidArgument, "memory model: decode_chunk must be at least 1");
  const uint64_t B = n_batch;
  const uint64_t per_row =
      2ull * c.n_embd + 2ull * c.q_dim() + 2ull * c.kv_dim() + 2ull * c.n_ff;  // x, xn, q+attn, k+v, gate+up
  const uint64_t part = attn_scratch_floats(decode_chunk, c.head_dim, c.n_head, n_ctx, n_batch);
  const uint64_t qkv1 = uint64_t(c.q_dim()) + 2ull * c.kv_dim();  // one token's stacked q, k, v
  return 4 * (B * per_row + part + B + c.n_vocab + qkv1);
}

MemoryQuery memory_query(const Model& model, const SessionOptions& o, uint32_t L) {
  MemoryQuery q;
  q.prompt_len = L;
  q.n_ctx = o.n_ctx ? o.n_ctx : default_n_ctx(model.config());
  q.n_batch = std::min(o.n_batch, q.n_ctx);
  q.kv_types = o.kv_types();
  q.kv = o.kv;
  q.decode_chunk = model.attention().decode_chunk;
  return q;
}

MemoryEstimate estimate_memory(const ModelConfig& c, uint64_t weight_bytes, const MemoryQuery& q) {
  // Every product below is then far from 2^64 (e.g. the full cache is at most
  // 2 * 2^10 layers * 2^32 rows per layer * 2^10 bytes = 2^53); only the caller's
  // weight_bytes can make the totals wrap.
  c.check();
  check_session_shape(c, q.n_ctx, q.n_batch);
  checked_range(q.prompt_len, 0, kMaxContext, "memory model: prompt length");
  q.kv.validate();
  for (const auto& [t, param] : {std::pair{q.kv_types.k, opt::kv_type_k}, std::pair{q.kv_types.v, opt::kv_type_v}})
    if (uint32_t(t) >= kKvTypes)
      throw Error(ErrorKind::InvalidArgument, "memory model: unknown KV type " + std::to_string(uint32_t(t)), param);
  check_kv_types(q.kv_types, c.head_dim);
  MemoryEstimate e;
  const uint64_t row = q.kv_types.row_bytes(c.head_dim);  // a K row and a V row
  const uint32_t L = q.prompt_len, n_kv = c.n_head_kv;
  e.weights = weight_bytes;
  e.activations = activation_bytes(c, std::min(q.n_batch, q.n_ctx), q.n_ctx, q.decode_chunk);
  // what a full cache allocates (a sliding-window layer: its ring)
  e.kv_full_equivalent = KvCache::size_after_prompt(c, q.kv_types, KvPolicyOptions{}, L, q.n_ctx, q.n_batch).allocated;
  e.kv_cache = KvCache::size_after_prompt(c, q.kv_types, q.kv, L, q.n_ctx, q.n_batch).allocated;
  if (!q.kv.compresses()) {
    e.peak = checked_add(e.weights, e.activations + e.kv_cache, "memory model: peak bytes");
    return e;
  }
  uint64_t scratch = 0;
  const std::vector<uint32_t> budgets = q.kv.layer_budgets(L, c.n_layer);
  for (uint32_t l = 0; l < c.n_layer; ++l)  // sliding-window layers are not compacted
    if (!c.is_swa(l)) scratch = std::max(scratch, KvCache::compaction_scratch_bytes(c, q.kv, L, budgets[l]));
  const uint32_t n_q = q.kv.voting_queries(L);
  e.prefill_transient = uint64_t(L) * c.n_embd * 4             // hidden states of the prompt
                        + uint64_t(n_kv) * L * row + 8ull * n_kv  // one layer's full K/V
                        + uint64_t(n_q) * c.q_dim() * 4        // the voting queries
                        + (q.kv.completes_words() ? uint64_t(L) * 4 : 0)  // the prompt's words
                        + scratch;
  e.peak = checked_add(e.weights, e.activations + e.kv_cache + e.prefill_transient, "memory model: peak bytes");
  return e;
}

}  // namespace snapvk
