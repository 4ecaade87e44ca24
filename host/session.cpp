#include "host/session.h"

#include <algorithm>
#include <string>

#include "runtime/vk_check.h"

namespace snapvk {

uint64_t Session::kv_bytes_for(const ModelConfig& c, KvType t, uint64_t tokens) {
  return 2ull * c.n_layer * c.n_head_kv * tokens * c.head_dim / 2 * kv_type_bytes_x2(t);
}

Session::Session(const Model& model, const SessionOptions& opts) : model_(model), opts_(opts), cs_(model.ctx()) {
  const ModelConfig& c = model.config();
  Context& ctx = model.ctx();
  if (opts_.n_ctx == 0) opts_.n_ctx = std::min<uint32_t>(c.n_ctx_train, 4096);
  if (opts_.n_batch == 0) throw Error("n_batch must be at least 1");
  opts_.n_batch = std::min(opts_.n_batch, opts_.n_ctx);
  cs_.set_profiling(opts_.profile);

  cache_.cap = opts_.n_ctx;
  cache_.type = opts_.kv_type;
  const uint64_t per_layer = kv_bytes_for(c, opts_.kv_type, cache_.cap) / c.n_layer / 2;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    cache_.k.emplace_back(ctx, per_layer, BufferKind::Device, "k_cache." + std::to_string(l));
    cache_.v.emplace_back(ctx, per_layer, BufferKind::Device, "v_cache." + std::to_string(l));
  }
  cache_.bytes = 2 * per_layer * c.n_layer;
  cache_.base = Buffer(ctx, c.n_head_kv * 4ull, BufferKind::Device, "kv_base");
  cache_.base.fill_zero();

  const uint64_t B = opts_.n_batch, f = 4;
  act_.x = Buffer(ctx, B * c.n_embd * f, BufferKind::Device, "x");
  act_.xn = Buffer(ctx, B * c.n_embd * f, BufferKind::Device, "xn");
  act_.q = Buffer(ctx, B * c.q_dim() * f, BufferKind::Device, "q");
  act_.k = Buffer(ctx, B * c.kv_dim() * f, BufferKind::Device, "k");
  act_.v = Buffer(ctx, B * c.kv_dim() * f, BufferKind::Device, "v");
  act_.attn = Buffer(ctx, B * c.q_dim() * f, BufferKind::Device, "attn");
  act_.gate = Buffer(ctx, B * c.n_ff * f, BufferKind::Device, "gate");
  act_.up = Buffer(ctx, B * c.n_ff * f, BufferKind::Device, "up");
  act_.part = Buffer(ctx, attn_partial_floats(model.attention(), c.n_head, cache_.cap) * f, BufferKind::Device, "attn_part");
  act_.ids = Buffer(ctx, B * 4, BufferKind::Staging, "ids");
  act_.logits = Buffer(ctx, uint64_t(c.n_vocab) * f, BufferKind::Staging, "logits");
  logits_.resize(c.n_vocab);
}

std::span<const float> Session::prefill(std::span<const int32_t> tokens) {
  if (tokens.empty()) throw Error("empty prompt");
  if (n_past_ + tokens.size() > cache_.cap)
    throw Error("prompt of " + std::to_string(tokens.size()) + " tokens does not fit the context: " +
                std::to_string(n_past_) + " used of " + std::to_string(cache_.cap) + " (raise -c)");
  const int32_t n_vocab = int32_t(model_.config().n_vocab);
  for (int32_t t : tokens)
    if (t < 0 || t >= n_vocab)
      throw Error("token id " + std::to_string(t) + " is outside the vocabulary (0.." + std::to_string(n_vocab - 1) + ")");
  for (size_t i = 0; i < tokens.size(); i += opts_.n_batch) {
    const uint32_t T = uint32_t(std::min<size_t>(opts_.n_batch, tokens.size() - i));
    forward(tokens.data() + i, T);
  }
  return logits_;
}

std::span<const float> Session::decode(int32_t token) { return prefill(std::span<const int32_t>(&token, 1)); }

}  // namespace snapvk
