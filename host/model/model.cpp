#include "host/model/model.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <variant>

#include "host/gguf/quant.h"
#include "runtime/checked.h"
#include "runtime/log.h"
#include "runtime/vk_check.h"
#include "snapvk_limits.h"

namespace snapvk {

namespace {

uint32_t checked_dim(const GgufFile& f, const std::string& key, uint64_t v, uint64_t max) {
  if (v == 0 || v > max)
    throw Error(ErrorKind::BadModel, f.path() + ": " + key + " = " + std::to_string(v) + " is out of range (1.." +
                                         std::to_string(max) + ")");
  return uint32_t(v);
}

// Linear RoPE scaling as llama.cpp reads it (llama_model::load_hparams): rope.scaling.type
// (default "linear") and rope.scaling.factor (or the older rope.scale_linear); freq_scale =
// 1 / factor. Other scaling types (yarn, longrope) are not applied, as before.
float read_rope_freq_scale(const GgufFile& f, const std::string& a) {
  const std::string type = f.get_string(a + "rope.scaling.type", "linear");
  float factor = f.get_float(a + "rope.scaling.factor", 0.0f);
  if (factor == 0.0f) factor = f.get_float(a + "rope.scale_linear", 0.0f);
  if (type != "linear" || factor == 0.0f) return 1.0f;
  if (!(factor > 0) || !std::isfinite(factor))
    throw Error(ErrorKind::BadModel, f.path() + ": invalid " + a + "rope.scaling.factor " + std::to_string(factor));
  return 1.0f / factor;
}

// Gemma 3's hyper-parameters, as llama.cpp's LLM_ARCH_GEMMA3 hparams and llm_build_gemma3 use
// them (src/llama-model.cpp, src/models/gemma3.cpp, src/llama-hparams.cpp):
// - sliding window gemma3.attention.sliding_window (n_swa), layers by the pattern
//   gemma3.attention.sliding_window_pattern (a period, default 6, or one flag per layer):
//   layer l slides when l % 6 < 5 (LLAMA_SWA_TYPE_STANDARD: key p0 is masked for query p1
//   when p1 - p0 >= n_swa); without a window every layer is global;
// - sliding-window layers rotate with base gemma3.rope.freq_base_swa (default 10000) and no
//   scaling; global layers with rope.freq_base and rope scaling (linear, 1/8 on 4B..27B);
// - q scaled by f_attention_scale = 1/sqrt(n_embd / n_head) for the 27B (62 layers; Gemma's
//   query_pre_attn_scalar), else 1/sqrt(head_dim); embeddings times sqrt(n_embd);
// - final logit soft-capping: not in Gemma 3 (llama.cpp never caps it); applied when a file
//   declares gemma3.final_logit_softcapping.
void read_gemma3(const GgufFile& f, ModelConfig& c) {
  const std::string a = "gemma3.";
  c.n_swa = uint32_t(std::min<uint64_t>(f.get_uint(a + "attention.sliding_window", 0), kMaxContext));
  c.rope_base_swa = f.get_float(a + "rope.freq_base_swa", 10000.0f);
  c.logit_softcap = f.get_float(a + "final_logit_softcapping", 0.0f);
  if (!(c.rope_base_swa > 0) || !(c.logit_softcap >= 0))
    throw Error(ErrorKind::BadModel, f.path() + ": invalid rope.freq_base_swa or final_logit_softcapping");
  c.attn_scale = c.n_layer == 62 ? 1.0f / std::sqrt(float(c.n_embd / c.n_head)) : 1.0f / std::sqrt(float(c.head_dim));
  c.embd_scale = std::sqrt(float(c.n_embd));
  const std::string key = a + "attention.sliding_window_pattern";
  const GgufValue* v = f.find(key);
  if (!v || v->type != GgufType::Array) {
    c.set_swa_pattern(c.n_swa, v ? uint32_t(std::min<uint64_t>(f.get_uint(key, 6), ModelConfig::kMaxLayers)) : 6);
    return;
  }
  const GgufArray& arr = std::get<GgufArray>(v->data);
  std::vector<int32_t> flags;
  if (arr.elem_type == GgufType::Bool)
    flags.assign(arr.raw.begin(), arr.raw.end());
  else
    flags = f.get_int_array(key);
  if (flags.size() != c.n_layer)
    throw Error(ErrorKind::BadModel, f.path() + ": " + key + " has " + std::to_string(flags.size()) + " entries for " +
                                         std::to_string(c.n_layer) + " layers");
  c.swa_layers.assign(c.n_layer, false);
  for (uint32_t l = 0; l < c.n_layer; ++l) c.swa_layers[l] = c.n_swa && flags[l] != 0;
}

}  // namespace

ModelConfig ModelConfig::from_gguf(const GgufFile& f) {
  ModelConfig c;
  c.arch_name = f.get_string("general.architecture", "");
  if (c.arch_name.empty())
    throw Error(ErrorKind::BadModel, f.path() + ": no general.architecture key: not a model file");
  try {
    c.set_arch(c.arch_name);
  } catch (const Error& e) {
    throw Error(ErrorKind::BadModel, f.path() + ": " + e.what());
  }
  const std::string a = c.arch_name + ".";
  c.name = f.get_string("general.name", "");
  c.n_embd = checked_dim(f, a + "embedding_length", f.require_uint(a + "embedding_length"), kMaxEmbd);
  c.n_layer = checked_dim(f, a + "block_count", f.require_uint(a + "block_count"), kMaxLayers);
  c.n_head = checked_dim(f, a + "attention.head_count", f.require_uint(a + "attention.head_count"), kMaxHeads);
  c.n_head_kv =
      checked_dim(f, a + "attention.head_count_kv", f.get_uint(a + "attention.head_count_kv", c.n_head), kMaxHeads);
  c.n_ff = checked_dim(f, a + "feed_forward_length", f.require_uint(a + "feed_forward_length"), kMaxFf);
  c.n_ctx_train = checked_dim(f, a + "context_length", f.get_uint(a + "context_length", 2048), kMaxContext);
  if (c.n_head % c.n_head_kv)
    throw Error(ErrorKind::BadModel, f.path() + ": head_count " + std::to_string(c.n_head) +
                                         " is not a multiple of head_count_kv " + std::to_string(c.n_head_kv));
  if (!f.has(a + "attention.key_length") && c.n_embd % c.n_head)
    throw Error(ErrorKind::BadModel, f.path() + ": " + a + "embedding_length " + std::to_string(c.n_embd) +
                                         " is not a multiple of head_count " + std::to_string(c.n_head) +
                                         " (and no attention.key_length)");
  const uint64_t hd_default = c.n_embd / c.n_head;
  c.head_dim = checked_dim(f, a + "attention.key_length", f.get_uint(a + "attention.key_length", hd_default),
                           SNAPVK_MAX_HEAD_DIM);
  if (f.get_uint(a + "attention.value_length", c.head_dim) != c.head_dim)
    throw Error(ErrorKind::BadModel,
                f.path() + ": attention.value_length differs from key_length, which snapvk does not support");
  if (c.head_dim % 2)
    throw Error(ErrorKind::BadModel, f.path() + ": head dimension " + std::to_string(c.head_dim) + " is odd");
  c.n_rot = checked_dim(f, a + "rope.dimension_count", f.get_uint(a + "rope.dimension_count", c.head_dim), c.head_dim);
  if (c.n_rot % 2)
    throw Error(ErrorKind::BadModel, f.path() + ": rope.dimension_count " + std::to_string(c.n_rot) + " is odd");
  c.rope_base = f.get_float(a + "rope.freq_base", 10000.0f);
  c.rms_eps = f.get_float(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  if (!(c.rope_base > 0) || !(c.rms_eps >= 0) || !(c.rms_eps < 1))
    throw Error(ErrorKind::BadModel, f.path() + ": invalid rope.freq_base or layer_norm_rms_epsilon");
  c.rope_freq_scale = read_rope_freq_scale(f, a);
  if (c.arch == Arch::Gemma3) read_gemma3(f, c);
  const GgufTensor* emb = f.find_tensor("token_embd.weight");
  if (!emb) throw Error(ErrorKind::BadModel, f.path() + ": tensor 'token_embd.weight' is missing");
  c.n_vocab = checked_dim(f, "token_embd.weight rows", emb->ne[1], kMaxVocab);
  c.rope_factors = f.find_tensor("rope_freqs.weight") != nullptr;
  // Report the type most of the weight bytes are stored in.
  std::map<GgmlType, uint64_t> by_type;
  for (const auto& t : f.tensors()) by_type[t.type] += t.nbytes;
  uint64_t best = 0;
  for (auto [t, b] : by_type)
    if (b > best) best = b, c.weight_type = t;
  try {
    c.check();
  } catch (const Error& e) {
    throw Error(e.kind(), f.path() + ": " + e.what(), e.param());
  }
  return c;
}

void ModelConfig::set_arch(const std::string& name) {
  arch_name = name;
  // llama.cpp (src/llama-model.cpp, src/models/qwen2.cpp, qwen3.cpp): qwen2 and qwen3 use
  // LLAMA_ROPE_TYPE_NEOX; qwen2 has q/k/v biases; qwen3 has none, and RMS-normalises each head
  // of q and k with attn_q_norm / attn_k_norm ([head_dim]) after the projections, before RoPE.
  if (name == "llama")
    arch = Arch::Llama;
  else if (name == "qwen2")
    arch = Arch::Qwen2;
  else if (name == "qwen3")
    arch = Arch::Qwen3;
  // gemma3 (src/models/gemma3.cpp, llama_model_rope_type): NEOX rope; RMSNorm before and after
  // both attention and FFN (attn_norm, post_attention_norm, ffn_norm, post_ffw_norm); per-head q/k
  // RMSNorm before RoPE; FFN gelu(gate) * up (LLM_FFN_GELU, LLM_FFN_PAR: ggml_gelu, the tanh
  // approximation); output tied to token_embd when output.weight is absent. Its norm weights are
  // used as stored: llama.cpp's converter (Gemma3Model.norm_shift) already added Gemma's 1.
  else if (name == "gemma3")
    arch = Arch::Gemma3;
  else
    throw Error(ErrorKind::BadModel,
                "unsupported architecture '" + name + "' (supported: llama, qwen2, qwen3, gemma3)");
  rope_type = arch == Arch::Llama ? RopeType::Norm : RopeType::Neox;
  qkv_bias = arch == Arch::Qwen2;
  qk_norm = arch == Arch::Qwen3 || arch == Arch::Gemma3;
  post_norms = gelu_ffn = arch == Arch::Gemma3;
}

void ModelConfig::set_swa_pattern(uint32_t window, uint32_t period) {
  n_swa = window;
  swa_layers.assign(window ? n_layer : 0, false);
  for (uint32_t l = 0; l < swa_layers.size(); ++l) swa_layers[l] = period == 0 || l % period < period - 1;
}

void ModelConfig::check() const {
  checked_range(n_embd, 1, kMaxEmbd, "model: n_embd", ErrorKind::BadModel);
  checked_range(n_layer, 1, kMaxLayers, "model: n_layer", ErrorKind::BadModel);
  checked_range(n_head, 1, kMaxHeads, "model: n_head", ErrorKind::BadModel);
  checked_range(n_head_kv, 1, kMaxHeads, "model: n_head_kv", ErrorKind::BadModel);
  checked_range(n_ff, 1, kMaxFf, "model: n_ff", ErrorKind::BadModel);
  checked_range(n_vocab, 1, kMaxVocab, "model: n_vocab", ErrorKind::BadModel);
  checked_range(n_ctx_train, 0, kMaxContext, "model: n_ctx_train", ErrorKind::BadModel);
  checked_range(head_dim, 2, SNAPVK_MAX_HEAD_DIM, "model: head_dim", ErrorKind::BadModel);
  checked_range(n_rot, 0, head_dim, "model: n_rot", ErrorKind::BadModel);
  if (head_dim % 2 || n_rot % 2)
    throw Error(ErrorKind::BadModel, "model: head_dim " + std::to_string(head_dim) + " and n_rot " +
                                         std::to_string(n_rot) + " must be even");
  if (n_head % n_head_kv)
    throw Error(ErrorKind::BadModel, "model: n_head " + std::to_string(n_head) + " is not a multiple of n_head_kv " +
                                         std::to_string(n_head_kv));
  if (group() > kMaxGroup)
    throw Error(ErrorKind::BadModel, "model: GQA group n_head / n_head_kv = " + std::to_string(group()) +
                                         " is larger than " + std::to_string(kMaxGroup) +
                                         ", the most snapvk's attention kernels support");
  if (!swa_layers.empty() && (swa_layers.size() != n_layer || n_swa == 0))
    throw Error(ErrorKind::BadModel, "model: sliding-window layers need a window and one flag per layer");
  if (!(rope_freq_scale > 0) || !(rope_base_swa > 0) || !(logit_softcap >= 0) || !(embd_scale >= 0) ||
      !(attn_scale >= 0))
    throw Error(ErrorKind::BadModel, "model: invalid rope scaling, sliding-window rope base, logit cap or scale");
  // The kernels index a weight matrix's elements with 32 bits (shaders/weights.glsl).
  const uint32_t qd = checked_mul_u32(n_head, head_dim, "model: q_dim = n_head * head_dim", ErrorKind::BadModel);
  checked_mul_u32(n_vocab, n_embd, "model: token_embd elements n_vocab * n_embd", ErrorKind::BadModel);
  checked_mul_u32(qd, n_embd, "model: attn_q elements n_head * head_dim * n_embd", ErrorKind::BadModel);
  checked_mul_u32(n_ff, n_embd, "model: ffn elements n_ff * n_embd", ErrorKind::BadModel);
}

namespace {

// Uploads take tensors checked by checked_weight() below.
// A matrix or vector uploaded in its stored type (buffers padded to whole 32-bit words).
DeviceTensor device_tensor(std::shared_ptr<const Buffer> store, GgmlType type, uint32_t cols, uint32_t rows) {
  DeviceTensor d;
  d.buf = BufferRange(*store, 0, store->size());
  d.store = std::move(store);
  d.type = type;
  d.cols = cols;
  d.rows = rows;
  return d;
}

DeviceTensor upload_tensor(Context& ctx, const GgufTensor& t) {
  auto b = std::make_shared<Buffer>(ctx, (t.nbytes + 3) / 4 * 4, BufferKind::Device, t.name);
  b->upload(t.data, t.nbytes);
  return device_tensor(std::move(b), t.type, uint32_t(t.ne[0]), uint32_t(t.ne[1] * t.ne[2] * t.ne[3]));
}

// Matrices of one input uploaded back to back into one buffer (`name`), each at an offset the
// device can bind. When they share a type, follow each other with no gap and fit one binding,
// `whole` is all of them as one matrix (LayerWeights::wqkv, w_gate_up): one matvec for them all.
// split_output: each matrix's part of the whole's f32 output must be bindable on its own too
// (q, k and v are read apart).
void upload_stack(Context& ctx, const Kernels& k, std::span<const GgufTensor* const> ts,
                  std::span<DeviceTensor* const> slots, DeviceTensor& whole, const std::string& name,
                  bool split_output) {
  const uint64_t align = std::max<uint64_t>(4, ctx.info().min_storage_buffer_offset_alignment);
  std::vector<uint64_t> at;
  uint64_t end = 0, rows = 0;
  bool stacked = true;
  for (const GgufTensor* t : ts) {
    const uint64_t o = (end + align - 1) / align * align;
    stacked = stacked && o == end && t->type == ts[0]->type && (!split_output || rows * 4 % align == 0);
    at.push_back(o);
    end = o + t->nbytes;
    rows += t->ne[1];
  }
  auto b = std::make_shared<Buffer>(ctx, (end + 3) / 4 * 4, BufferKind::Device, name);
  for (size_t i = 0; i < ts.size(); ++i) {
    const GgufTensor& t = *ts[i];
    b->upload(t.data, t.nbytes, at[i]);
    DeviceTensor& d = *slots[i];
    d = device_tensor(b, t.type, uint32_t(t.ne[0]), uint32_t(t.ne[1]));
    d.buf = BufferRange(*b, at[i], (t.nbytes + 3) / 4 * 4);
  }
  if (stacked && matvec_fits(k, ts[0]->type, rows, uint32_t(ts[0]->ne[0])))
    whole = device_tensor(b, ts[0]->type, uint32_t(ts[0]->ne[0]), uint32_t(rows));
}

// Norm weights, biases and RoPE factors are used as f32 whatever the file stores.
DeviceTensor upload_f32(Context& ctx, const GgufTensor& t) {
  if (t.type == GgmlType::F32) return upload_tensor(ctx, t);
  std::vector<float> v(t.n_elements());
  dequantize_row(t.type, t.data, v.data(), int64_t(v.size()));
  auto b = std::make_shared<Buffer>(ctx, v.size() * 4, BufferKind::Device, t.name);
  b->upload(v.data(), v.size() * 4);
  return device_tensor(std::move(b), GgmlType::F32, uint32_t(t.ne[0]), uint32_t(t.n_elements() / t.ne[0]));
}

// Every weight tensor a model of config `c` reads, and the slot it fills: one list for the
// device-free check and for the upload. visit(name, cols, rows, slot); rows == 0 marks a
// vector of `cols` elements (used as f32), otherwise a [rows, cols] matrix in its stored type.
template <class Visit>
void visit_weights(const GgufFile& f, const ModelConfig& c, ModelWeights& w, Visit&& visit) {
  visit("token_embd.weight", c.n_embd, c.n_vocab, w.tok_embd);
  visit("output_norm.weight", c.n_embd, 0, w.output_norm);
  if (f.find_tensor("output.weight")) visit("output.weight", c.n_embd, c.n_vocab, w.output);
  if (c.rope_factors) visit("rope_freqs.weight", c.n_rot / 2, 0, w.rope_freqs);
  w.layers.resize(c.n_layer);
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights& L = w.layers[l];
    visit(p + "attn_norm.weight", c.n_embd, 0, L.attn_norm);
    visit(p + "attn_q.weight", c.n_embd, c.q_dim(), L.wq);
    visit(p + "attn_k.weight", c.n_embd, c.kv_dim(), L.wk);
    visit(p + "attn_v.weight", c.n_embd, c.kv_dim(), L.wv);
    if (c.qkv_bias) {
      visit(p + "attn_q.bias", c.q_dim(), 0, L.bq);
      visit(p + "attn_k.bias", c.kv_dim(), 0, L.bk);
      visit(p + "attn_v.bias", c.kv_dim(), 0, L.bv);
    }
    if (c.qk_norm) {
      visit(p + "attn_q_norm.weight", c.head_dim, 0, L.q_norm);
      visit(p + "attn_k_norm.weight", c.head_dim, 0, L.k_norm);
    }
    visit(p + "attn_output.weight", c.q_dim(), c.n_embd, L.wo);
    if (c.post_norms) visit(p + "post_attention_norm.weight", c.n_embd, 0, L.post_attn_norm);
    visit(p + "ffn_norm.weight", c.n_embd, 0, L.ffn_norm);
    visit(p + "ffn_gate.weight", c.n_embd, c.n_ff, L.w_gate);
    visit(p + "ffn_up.weight", c.n_embd, c.n_ff, L.w_up);
    visit(p + "ffn_down.weight", c.n_ff, c.n_embd, L.w_down);
    if (c.post_norms) visit(p + "post_ffw_norm.weight", c.n_embd, 0, L.post_ffn_norm);
  }
}

// The tensor `name` with the shape the config implies, in a type snapvk reads.
const GgufTensor& checked_weight(const GgufFile& f, const std::string& name, uint64_t cols, uint64_t rows) {
  const GgufTensor& t = rows ? f.require_tensor(name, {cols, rows}) : f.require_tensor(name, {cols});
  if (!traits_of(t.type).supported)
    throw Error(ErrorKind::BadModel, f.path() + ": tensor '" + t.name + "' has type " + type_name(t.type) +
                                         ", which snapvk does not support (supported: " + supported_type_names() + ")");
  if (rows && cols % traits_of(t.type).block_size)
    throw Error(ErrorKind::BadModel,
                f.path() + ": tensor '" + name + "' rows are not whole " + type_name(t.type) + " blocks");
  return t;
}

}  // namespace

void check_model_tensors(const GgufFile& f, const ModelConfig& c) {
  ModelWeights none;
  visit_weights(f, c, none, [&](const std::string& name, uint64_t cols, uint64_t rows, DeviceTensor&) {
    checked_weight(f, name, cols, rows);
  });
}

Model::Model(Kernels& kernels, const std::string& path) : k_(kernels), file_(GgufFile::open(path)) {
  cfg_ = ModelConfig::from_gguf(file_);
  tok_ = std::make_unique<Tokenizer>(vocab_from_gguf(file_));
  const ModelConfig& c = cfg_;
  Context& ctx = k_.ctx;
  check_model_tensors(file_, c);  // a bad file fails before anything is uploaded
  // q, k, v and gate, up: each group in one buffer (a stack), one matrix when it can be
  w_.layers.resize(c.n_layer);
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights& L = w_.layers[l];
    const GgufTensor* qkv[] = {file_.find_tensor(p + "attn_q.weight"), file_.find_tensor(p + "attn_k.weight"),
                               file_.find_tensor(p + "attn_v.weight")};  // (checked above)
    DeviceTensor* qkv_slots[] = {&L.wq, &L.wk, &L.wv};
    upload_stack(ctx, k_, qkv, qkv_slots, L.wqkv, p + "attn_qkv", true);
    const GgufTensor* ffn[] = {file_.find_tensor(p + "ffn_gate.weight"), file_.find_tensor(p + "ffn_up.weight")};
    DeviceTensor* ffn_slots[] = {&L.w_gate, &L.w_up};
    upload_stack(ctx, k_, ffn, ffn_slots, L.w_gate_up, p + "ffn_gate_up", false);
    for (const DeviceTensor* t : {&L.wq, &L.wk, &L.wv, &L.w_gate, &L.w_up}) k_.weights(weight_kind(t->type));
  }
  visit_weights(file_, c, w_, [&](const std::string& name, uint64_t cols, uint64_t rows, DeviceTensor& slot) {
    if (slot) return;  // in a stack
    const GgufTensor& t = checked_weight(file_, name, cols, rows);
    slot = rows ? upload_tensor(ctx, t) : upload_f32(ctx, t);
    if (rows) k_.weights(weight_kind(slot.type));  // its kernels, now rather than in a step
  });
  if (c.embd_scale > 0) {
    auto b = std::make_shared<Buffer>(ctx, 4, BufferKind::Device, "embd_scale");
    b->upload(&c.embd_scale, 4);
    w_.embd_scale = device_tensor(std::move(b), GgmlType::F32, 1, 1);
  }
  // Summed per tensor: the device-wide counter would also count other threads' allocations.
  auto add = [&](const DeviceTensor& t) { w_.bytes += t ? t.buf.size : 0; };  // (a stack's matrices, not it)
  add(w_.tok_embd), add(w_.output_norm), add(w_.output), add(w_.rope_freqs), add(w_.embd_scale);
  for (const LayerWeights& L : w_.layers)
    for (const DeviceTensor* t : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.bq, &L.bk, &L.bv, &L.q_norm, &L.k_norm, &L.wo,
                                  &L.post_attn_norm, &L.post_ffn_norm, &L.ffn_norm, &L.w_gate, &L.w_up, &L.w_down})
      add(*t);
  attn_ = AttentionKernels(ctx, k_.tuning, c.head_dim, c.group());
  log().info("model {}: {} ({}), {} layers, dim {}, heads {}/{}, head_dim {}, ffn {}, vocab {}, weights {:.1f} MiB",
             path, c.name.empty() ? c.arch_name : c.name, type_name(c.weight_type), c.n_layer, c.n_embd, c.n_head,
             c.n_head_kv, c.head_dim, c.n_ff, c.n_vocab, double(w_.bytes) / (1 << 20));
}

}  // namespace snapvk
