#pragma once
// A session: one conversation's KV cache and activations on the device, allocated once.
// prefill() runs prompt tokens in batches (matrix-matrix), decode() one token (matrix-vector).
#include <cstdint>
#include <span>
#include <vector>

#include "host/model.h"
#include "runtime/commands.h"

namespace snapvk {

struct SessionOptions {
  uint32_t n_ctx = 0;      // positions the cache holds; 0: the model's training context, at most 4096
  uint32_t n_batch = 256;  // prompt tokens per prefill step
  KvType kv_type = KvType::F16;
  bool profile = false;    // per-kernel GPU timestamps
};

// Full KV cache: per layer K and V as [n_kv][cap][head_dim] of `type`.
struct KvCache {
  std::vector<Buffer> k, v;  // [n_layer]
  Buffer base;               // [n_kv] u32: per-head slots held before appended tokens (0 for a full cache)
  uint32_t cap = 0;          // slots per head
  KvType type = KvType::F16;
  uint64_t bytes = 0;        // device bytes of k and v
};

// Per-step activations, f32 unless noted; B = n_batch.
struct Activations {
  Buffer x;       // [B, n_embd] residual stream
  Buffer xn;      // [B, n_embd] normed input / sublayer output
  Buffer q;       // [B, q_dim]
  Buffer k, v;    // [B, kv_dim]
  Buffer attn;    // [B, q_dim] attention output
  Buffer gate;    // [B, n_ff]
  Buffer up;      // [B, n_ff]
  Buffer part;    // decode attention partials
  Buffer ids;     // [B] int32 token ids, host-visible
  Buffer logits;  // [n_vocab], host-visible
};

class Session {
 public:
  Session(const Model& model, const SessionOptions& opts = {});

  // Appends tokens at the current position and returns the logits after the last one.
  std::span<const float> prefill(std::span<const int32_t> tokens);
  // Appends one token and returns the logits after it.
  std::span<const float> decode(int32_t token);
  void reset() { n_past_ = 0; }

  uint32_t n_past() const { return n_past_; }
  uint32_t n_ctx() const { return cache_.cap; }
  const Model& model() const { return model_; }
  const SessionOptions& options() const { return opts_; }
  const KvCache& cache() const { return cache_; }
  // Bytes a full f-type cache needs for `tokens` positions (all layers, K and V).
  static uint64_t kv_bytes_for(const ModelConfig& c, KvType t, uint64_t tokens);
  CommandStream& stream() { return cs_; }

 private:
  void forward(const int32_t* tokens, uint32_t T);  // host/forward.cpp

  const Model& model_;
  SessionOptions opts_;
  KvCache cache_;
  Activations act_;
  CommandStream cs_;
  uint32_t n_past_ = 0;
  std::vector<float> logits_;
};

}  // namespace snapvk
