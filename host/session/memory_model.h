#pragma once
// The device-memory model of a session: what the weights, activations, KV cache and a
// compressed prefill's transient buffers take, computed from the shapes alone. Sessions use it
// to refuse up front what cannot fit a budget; `snapvk profile --dry-run` prints it for shapes
// that are never run. Session allocations follow these same formulas.
#include <cstdint>

#include "host/kernels/attention.h"
#include "host/kv/kv_policy.h"
#include "host/session/options.h"
#include "host/model/model.h"
#include "host/session/session.h"

namespace snapvk {

struct MemoryEstimate {
  uint64_t weights = 0;
  uint64_t activations = 0;         // per-batch activations, decode partials, ids, logits
  uint64_t kv_cache = 0;            // the session's KV cache after the prompt (compacted or full)
  uint64_t kv_full_equivalent = 0;  // what a full cache of n_ctx positions would take
  uint64_t prefill_transient = 0;   // compressed prefill only: prompt hidden states, one layer's full K/V, scores
  uint64_t peak = 0;                // the largest total at any time
};

struct MemoryQuery {
  uint32_t prompt_len = 0;  // L
  uint32_t n_ctx = 0;       // positions held: prompt + generated
  uint32_t n_batch = kDefaultBatch;
  KvTypes kv_types;  // f16 both
  KvPolicyOptions kv;
  uint32_t decode_chunk = 256;  // AttentionKernels::decode_chunk of the device
};

// Throws snapvk::Error naming the quantity for a config that ModelConfig::check() rejects, a query
// outside check_session_shape(), a prompt longer than kMaxContext, a decode_chunk of 0, or a
// total that overflows 64 bits.
MemoryEstimate estimate_memory(const ModelConfig& c, uint64_t weight_bytes, const MemoryQuery& q);

// Checks that a session of this shape fits the 32-bit counts the kernels take: n_ctx in
// 1..kMaxContext, the KV rows of one layer (n_head_kv * n_ctx) and the elements of every
// per-batch activation (n_batch * n_embd, q_dim, kv_dim, n_ff) below 2^32. Throws snapvk::Error
// naming the product. Session and estimate_memory call it.
void check_session_shape(const ModelConfig& c, uint32_t n_ctx, uint32_t n_batch);

// The query for a session of `model` with these options and a prompt of L tokens, with the
// defaults a Session applies (n_ctx 0: the model's context, at most 4096; n_batch <= n_ctx).
MemoryQuery memory_query(const Model& model, const SessionOptions& o, uint32_t L);

// Bytes of the per-session activations (Session allocates exactly these).
uint64_t activation_bytes(const ModelConfig& c, uint32_t n_batch, uint32_t n_ctx, uint32_t decode_chunk);

}  // namespace snapvk
