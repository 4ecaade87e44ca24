#pragma once
// The CPU reference forward pass: scalar, one token at a time, f32 weights (dequantized from
// the file) and an f32 KV cache, written to be obviously right rather than fast. Tests use it
// as the oracle for whole-model logits.
#include <cstdint>
#include <vector>

#include "host/gguf/gguf.h"
#include "host/model/model.h"

namespace snapvk {

class RefModel {
 public:
  // kv_f16: round cached K and V to f16, as the GPU's default cache stores them.
  RefModel(const GgufFile& file, const ModelConfig& cfg, uint32_t n_ctx, bool kv_f16 = false);
  // Logits after feeding `token` at position pos() (positions advance by one per call).
  std::vector<float> forward(int32_t token);
  uint32_t pos() const { return pos_; }
  // The attention rows of the last forward call: [n_head][pos+1] probabilities.
  const std::vector<float>& last_attention(uint32_t layer) const { return att_[layer]; }
  // K cache of a layer after RoPE: [pos][n_head_kv][head_dim].
  const std::vector<float>& k_cache(uint32_t layer) const { return kc_[layer]; }
  const std::vector<float>& v_cache(uint32_t layer) const { return vc_[layer]; }
  // Rotated queries of every position so far: [pos][n_head][head_dim].
  const std::vector<float>& q_history(uint32_t layer) const { return qh_[layer]; }
  // From now on, positions below L that are not in keep[layer][kv_head] are invisible to
  // attention: the reference for decoding over a compacted cache. Sliding-window layers (gemma3)
  // mask keys older than their window whatever `keep` says.
  void restrict_prompt(uint32_t L, std::vector<std::vector<std::vector<uint32_t>>> keep);

 private:
  struct Layer {
    std::vector<float> attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, post_attn_norm, ffn_norm, w_gate, w_up,
        w_down, post_ffn_norm;
  };
  ModelConfig c_;
  uint32_t n_ctx_;
  bool kv_f16_ = false;
  std::vector<float> tok_embd_, output_norm_, output_, rope_freqs_;
  std::vector<Layer> layers_;
  void attention(uint32_t l, const std::vector<float>& q, std::vector<float>& out);
  std::vector<std::vector<float>> kc_, vc_, att_, qh_;
  uint32_t restrict_len_ = 0;
  std::vector<std::vector<std::vector<bool>>> visible_;  // [layer][kv head][pos < restrict_len_]
  uint32_t pos_ = 0;
};

}  // namespace snapvk
