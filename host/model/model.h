#pragma once
// A Llama-family model loaded from GGUF: hyper-parameters, device weights in their stored
// types, the tokenizer, and the kernels specialised for its shape.
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "host/gguf/gguf.h"
#include "host/kernels/attention.h"
#include "host/kernels/ops.h"
#include "host/model/tokenizer.h"
#include "runtime/memory.h"

namespace snapvk {

// Most positions a model's context or a session holds, and so the bound on prompt lengths, KV
// budgets and windows: past it a number is absurd, and 32-bit row and position counts could wrap.
// Here, in the lowest layer that reads a context length (a model's n_ctx_train), not in the
// kernels, which know nothing of contexts.
constexpr uint32_t kMaxContext = 1u << 24;

enum class Arch { Llama, Qwen2, Qwen3, Gemma3 };
enum class RopeType : uint32_t { Norm = 0, Neox = 2 };  // llama.cpp's numbering

struct ModelConfig {
  Arch arch = Arch::Llama;
  std::string arch_name;  // general.architecture
  std::string name;       // general.name, if any
  uint32_t n_embd = 0;    // model width (dim)
  uint32_t n_layer = 0;
  uint32_t n_head = 0;     // query heads
  uint32_t n_head_kv = 0;  // key/value heads (GQA when < n_head)
  uint32_t head_dim = 0;   // n_embd / n_head unless the file says otherwise
  uint32_t n_ff = 0;       // feed-forward hidden width
  uint32_t n_vocab = 0;
  uint32_t n_ctx_train = 0;
  uint32_t n_rot = 0;  // rotated dimensions per head (rope.dimension_count)
  float rope_base = 10000.0f;
  float rms_eps = 1e-5f;
  RopeType rope_type = RopeType::Norm;
  bool qkv_bias = false;  // qwen2
  bool qk_norm = false;   // qwen3, gemma3: per-head RMSNorm of q and k (attn_q_norm, attn_k_norm) before RoPE
  // gemma3 (each checked against llama.cpp, see set_arch and read_gemma3 in model.cpp):
  bool post_norms = false;         // RMSNorm of the attention and FFN outputs (post_attention_norm, post_ffw_norm)
  bool gelu_ffn = false;           // FFN gate activation GELU (tanh approximation) instead of SiLU
  float embd_scale = 0.0f;         // token embeddings times this (sqrt(n_embd)); 0: not scaled
  float attn_scale = 0.0f;         // q k^T scale; 0: 1 / sqrt(head_dim)
  float logit_softcap = 0.0f;      // logits = cap * tanh(logits / cap); 0: none
  float rope_freq_scale = 1.0f;    // linear RoPE scaling (1 / rope.scaling.factor), global layers only
  uint32_t n_swa = 0;              // sliding window: a query sees itself and the n_swa - 1 before it
  float rope_base_swa = 10000.0f;  // RoPE base of the sliding-window layers
  std::vector<bool> swa_layers;    // [n_layer] true: a sliding-window layer; empty: every layer global
  bool rope_factors = false;       // Llama 3 rope_freqs tensor present
  GgmlType weight_type = GgmlType::F32;  // the most common matrix type (for reports)

  // Bounds no real model exceeds; past them a file is corrupt (and would ask for absurd memory).
  static constexpr uint32_t kMaxEmbd = 1u << 16, kMaxLayers = 1024, kMaxHeads = 1024, kMaxFf = 1u << 20,
                            kMaxVocab = 1u << 22, kMaxGroup = 16;

  // The architecture from general.architecture, with the features it implies (rope type, biases,
  // q/k norms). Throws snapvk::Error for an architecture snapvk does not run.
  void set_arch(const std::string& name);
  // Reads and checks the hyper-parameters (llama.cpp's defaults for missing keys), then check().
  static ModelConfig from_gguf(const GgufFile& f);
  // Throws snapvk::Error ("model: ...") unless every dimension is within the bounds above and
  // every size derived from them fits what the kernels index: each weight matrix has fewer than
  // 2^32 elements (n_vocab * n_embd, n_head * head_dim * n_embd, n_ff * n_embd). from_gguf,
  // estimate_memory and Session call it, so a hand-built config is checked too.
  void check() const;
  uint32_t q_dim() const { return n_head * head_dim; }
  uint32_t kv_dim() const { return n_head_kv * head_dim; }
  uint32_t group() const { return n_head / n_head_kv; }
  float attention_scale() const { return attn_scale > 0 ? attn_scale : 1.0f / std::sqrt(float(head_dim)); }
  bool is_swa(uint32_t l) const { return l < swa_layers.size() && swa_layers[l]; }
  // Layer l is a sliding-window layer when l % period < period - 1 (llama.cpp's set_swa_pattern:
  // period 6 is five sliding-window layers, then a global one); period 0 makes every layer one.
  void set_swa_pattern(uint32_t window, uint32_t period);
};

// A weight matrix [rows, cols] (cols contiguous, ggml's ne0) or vector on the device: its own
// buffer, or a range of a stack that holds several matrices back to back (LayerWeights).
struct DeviceTensor {
  std::shared_ptr<const Buffer> store;  // the buffer `buf` lies in
  BufferRange buf;                       // its bytes
  GgmlType type = GgmlType::F32;
  uint32_t cols = 0;  // ne0
  uint32_t rows = 1;  // ne1
  explicit operator bool() const { return bool(store); }
};

struct LayerWeights {
  DeviceTensor attn_norm;       // [n_embd] f32
  DeviceTensor wq, wk, wv;      // [q_dim | kv_dim, n_embd]
  DeviceTensor bq, bk, bv;      // [q_dim | kv_dim] f32, qwen2 only
  DeviceTensor q_norm, k_norm;  // [head_dim] f32, qwen3 and gemma3
  DeviceTensor post_attn_norm;  // [n_embd] f32, gemma3
  DeviceTensor post_ffn_norm;   // [n_embd] f32, gemma3
  DeviceTensor wo;              // [n_embd, q_dim]
  DeviceTensor ffn_norm;        // [n_embd] f32
  DeviceTensor w_gate, w_up;    // [n_ff, n_embd]
  DeviceTensor w_down;          // [n_embd, n_ff]
  // wq, wk, wv and w_gate, w_up as one matrix each, when they share a type and lie back to back
  // in one buffer (a stack): one matvec projects all three, or gate and up with their SwiGLU.
  // Empty when they cannot be stacked (types differ, the stack would exceed one binding, or
  // q's or k's part of the stacked output would start at an offset the device cannot bind).
  DeviceTensor wqkv;     // [q_dim + 2 kv_dim, n_embd], in the buffer of wq, wk, wv
  DeviceTensor w_gate_up;  // [2 n_ff, n_embd], in the buffer of w_gate, w_up
};

struct ModelWeights {
  DeviceTensor tok_embd;     // [n_vocab, n_embd]
  DeviceTensor output_norm;  // [n_embd] f32
  DeviceTensor output;       // [n_vocab, n_embd]; empty when tied to tok_embd
  DeviceTensor rope_freqs;   // [n_rot / 2] f32, Llama 3 only
  DeviceTensor embd_scale;   // [1] f32: ModelConfig::embd_scale, when set (gemma3)
  std::vector<LayerWeights> layers;
  const DeviceTensor& lm_head() const { return output ? output : tok_embd; }
  uint64_t bytes = 0;  // bytes of all weight tensors on the device
};

// Checks, without a device, that the file holds every weight tensor the config needs, in the
// shape it implies and a type snapvk reads. Throws snapvk::Error naming the first problem.
void check_model_tensors(const GgufFile& f, const ModelConfig& c);

class Model {
 public:
  // Opens the GGUF, checks it, uploads the weights. Kernels must outlive the model.
  Model(Kernels& kernels, const std::string& path);

  const ModelConfig& config() const { return cfg_; }
  const ModelWeights& weights() const { return w_; }
  const Tokenizer& tokenizer() const { return *tok_; }
  const GgufFile& gguf() const { return file_; }
  Kernels& kernels() const { return k_; }
  Context& ctx() const { return k_.ctx; }
  const AttentionKernels& attention() const { return attn_; }

 private:
  Kernels& k_;
  GgufFile file_;
  ModelConfig cfg_;
  std::unique_ptr<Tokenizer> tok_;
  ModelWeights w_;
  AttentionKernels attn_;
};

}  // namespace snapvk
