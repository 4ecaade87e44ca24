#include "host/report/synth.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <thread>

#include "host/gguf/gguf.h"
#include "host/gguf/gguf_writer.h"
#include "host/gguf/quant.h"
#include "runtime/error.h"
#include "snapvk_limits.h"

namespace snapvk {

namespace {

// ---- random numbers: integer-only, so the bytes are the same on every platform ----

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

// xoshiro256**, seeded through splitmix64 as its authors recommend.
struct Rng {
  uint64_t s[4];
  explicit Rng(uint64_t seed) {
    for (uint64_t& x : s) x = splitmix64(seed);
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    const uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return r;
  }
  // Approximately N(0, 1): the sum of four 16-bit uniforms (Irwin-Hall), centred and scaled to
  // unit variance. No libm, so no platform differences, and bounded by +-3.46: no outliers to
  // blow up a quantization block's scale.
  float normal() {
    const uint64_t r = next();
    const uint32_t sum =
        uint32_t(r & 0xFFFF) + uint32_t((r >> 16) & 0xFFFF) + uint32_t((r >> 32) & 0xFFFF) + uint32_t(r >> 48);
    constexpr float kScale = 1.7320508f / 65536.0f;   // sqrt(3): the sum of 4 U(0,1) has variance 1/3
    return (float(sum) + 2.0f - 131072.0f) * kScale;  // +2: each uniform is (k + 0.5) / 65536
  }
};

// ---- the tensors of a shape ----

struct TensorSpec {
  std::string name;
  GgmlType type;
  uint64_t cols, rows;  // ne0, ne1 (rows = 1 for vectors)
  float mean, stddev;   // values are mean + stddev * N(0, 1)
};

std::vector<TensorSpec> tensor_specs(const SynthShape& s) {
  const uint64_t D = s.n_embd, QD = uint64_t(s.n_head) * s.head_size(), KVD = uint64_t(s.n_head_kv) * s.head_size();
  const GgmlType W = s.weight_type, F32 = GgmlType::F32;
  const float norm_sd = 0.1f, bias_sd = 0.2f;
  auto inv_sqrt = [](uint64_t fan_in) { return float(1.0 / std::sqrt(double(fan_in))); };
  std::vector<TensorSpec> t;
  // Tied: the embedding rows are also the lm head, whose logits should be O(1).
  const bool gemma = s.arch == "gemma3";
  t.push_back(
      {"token_embd.weight", s.embedding_type(), D, s.n_vocab, 0.0f, s.tied_output || gemma ? inv_sqrt(D) : 1.0f});
  t.push_back({"output_norm.weight", F32, D, 1, 1.0f, norm_sd});
  if (!s.tied_output) t.push_back({"output.weight", W, D, s.n_vocab, 0.0f, inv_sqrt(D)});
  for (uint32_t l = 0; l < s.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    t.push_back({p + "attn_norm.weight", F32, D, 1, 1.0f, norm_sd});
    t.push_back({p + "attn_q.weight", W, D, QD, 0.0f, inv_sqrt(D)});
    t.push_back({p + "attn_k.weight", W, D, KVD, 0.0f, inv_sqrt(D)});
    t.push_back({p + "attn_v.weight", W, D, KVD, 0.0f, inv_sqrt(D)});
    if (s.arch == "qwen2") {
      t.push_back({p + "attn_q.bias", F32, QD, 1, 0.0f, bias_sd});
      t.push_back({p + "attn_k.bias", F32, KVD, 1, 0.0f, bias_sd});
      t.push_back({p + "attn_v.bias", F32, KVD, 1, 0.0f, bias_sd});
    }
    if (s.arch == "qwen3" || gemma) {  // per-head q/k norms, [head_dim]
      t.push_back({p + "attn_q_norm.weight", F32, s.head_size(), 1, 1.0f, norm_sd});
      t.push_back({p + "attn_k_norm.weight", F32, s.head_size(), 1, 1.0f, norm_sd});
    }
    t.push_back({p + "attn_output.weight", W, QD, D, 0.0f, inv_sqrt(QD)});
    if (gemma) t.push_back({p + "post_attention_norm.weight", F32, D, 1, 1.0f, norm_sd});
    t.push_back({p + "ffn_norm.weight", F32, D, 1, 1.0f, norm_sd});
    t.push_back({p + "ffn_gate.weight", W, D, s.n_ff, 0.0f, inv_sqrt(D)});
    t.push_back({p + "ffn_up.weight", W, D, s.n_ff, 0.0f, inv_sqrt(D)});
    t.push_back({p + "ffn_down.weight", W, s.n_ff, D, 0.0f, inv_sqrt(s.n_ff)});
    if (gemma) t.push_back({p + "post_ffw_norm.weight", F32, D, 1, 1.0f, norm_sd});
  }
  return t;
}

// Runs body(row_begin, row_end) over [0, rows) on all cores when the tensor is big enough to be
// worth it. Rows are independent (own seeds, own blocks), so the split does not change the bytes.
void parallel_rows(uint64_t rows, uint64_t cols, const std::function<void(uint64_t, uint64_t)>& body) {
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const uint64_t n_threads = std::min<uint64_t>({hw, rows, rows * cols / (1u << 16) + 1});
  if (n_threads <= 1) return body(0, rows);
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(n_threads);
  for (uint64_t i = 0; i < n_threads; ++i)
    threads.emplace_back([&, i] {
      try {
        body(rows * i / n_threads, rows * (i + 1) / n_threads);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    });
  for (auto& th : threads) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

void fill_tensor(const TensorSpec& t, uint64_t seed, uint8_t* dst) {
  const uint64_t rb = row_bytes(t.type, t.cols), name_hash = fnv1a(t.name);
  parallel_rows(t.rows, t.cols, [&](uint64_t r0, uint64_t r1) {
    std::vector<float> row(t.cols);
    for (uint64_t r = r0; r < r1; ++r) {
      uint64_t mix = seed ^ (name_hash * 0x9E3779B97F4A7C15ull);
      mix = splitmix64(mix) + r;
      Rng rng(mix);
      for (float& x : row) x = t.mean + t.stddev * rng.normal();
      quantize_row(t.type, row.data(), dst + r * rb, int64_t(t.cols));
    }
  });
}

// llama.cpp's general.file_type (enum llama_ftype) for a model whose matrices are `type`.
uint32_t llama_ftype(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return 0;      // ALL_F32
    case GgmlType::F16: return 1;      // MOSTLY_F16
    case GgmlType::Q4_0: return 2;     // MOSTLY_Q4_0
    case GgmlType::Q4_1: return 3;     // MOSTLY_Q4_1
    case GgmlType::Q8_0: return 7;     // MOSTLY_Q8_0
    case GgmlType::Q5_0: return 8;     // MOSTLY_Q5_0
    case GgmlType::Q5_1: return 9;     // MOSTLY_Q5_1
    case GgmlType::Q2_K: return 10;    // MOSTLY_Q2_K
    case GgmlType::Q3_K: return 11;    // MOSTLY_Q3_K_S (every matrix q3_K)
    case GgmlType::Q4_K: return 14;    // MOSTLY_Q4_K_S (every matrix q4_K)
    case GgmlType::Q5_K: return 16;    // MOSTLY_Q5_K_S (every matrix q5_K)
    case GgmlType::Q6_K: return 18;    // MOSTLY_Q6_K
    case GgmlType::IQ4_NL: return 25;  // MOSTLY_IQ4_NL
    case GgmlType::IQ4_XS: return 30;  // MOSTLY_IQ4_XS
    case GgmlType::BF16: return 32;    // MOSTLY_BF16
    default: throw Error(ErrorKind::InvalidArgument, std::string("no llama.cpp file type for ") + type_name(type));
  }
}

void check_type(GgmlType t, const char* what) {
  const TypeTraits* tr = type_traits(static_cast<uint32_t>(t));
  if (!tr || !tr->supported)
    throw Error(ErrorKind::InvalidArgument, std::string(what) + " " + (tr ? tr->name : "unknown") +
                                                " is not supported (supported: " + supported_type_names() + ")");
}

void check_rows(GgmlType t, uint64_t n, const char* what) {
  const uint32_t bs = traits_of(t).block_size;
  if (n % bs)
    throw Error(ErrorKind::InvalidArgument, std::string(type_name(t)) + " needs rows that are multiples of " +
                                                std::to_string(bs) + ": " + what + " = " + std::to_string(n) +
                                                " is not");
}

GgufWriter synth_writer(const SynthShape& s, bool with_fill) {
  check_synth_shape(s);
  const std::string a = s.arch + ".";
  const uint32_t hd = s.head_size();
  GgufWriter w;
  w.set_string("general.architecture", s.arch);
  w.set_string("general.name", "snapvk synth " + s.arch + " d" + std::to_string(s.n_embd) + " l" +
                                   std::to_string(s.n_layer) + " seed " + std::to_string(s.seed));
  w.set_uint32("general.file_type", llama_ftype(s.weight_type));
  w.set_uint32("general.quantization_version", 2);
  w.set_uint32(a + "vocab_size", s.n_vocab);
  w.set_uint32(a + "context_length", s.n_ctx);
  w.set_uint32(a + "embedding_length", s.n_embd);
  w.set_uint32(a + "block_count", s.n_layer);
  w.set_uint32(a + "feed_forward_length", s.n_ff);
  w.set_uint32(a + "attention.head_count", s.n_head);
  w.set_uint32(a + "attention.head_count_kv", s.n_head_kv);
  if (hd * s.n_head != s.n_embd) {  // llama.cpp assumes n_embd / n_head otherwise
    w.set_uint32(a + "attention.key_length", hd);
    w.set_uint32(a + "attention.value_length", hd);
  }
  w.set_float32(a + "attention.layer_norm_rms_epsilon", s.arch == "llama" ? 1e-5f : 1e-6f);
  w.set_float32(a + "rope.freq_base", s.rope_base);
  w.set_uint32(a + "rope.dimension_count", hd);
  if (s.arch == "gemma3") {
    w.set_uint32(a + "attention.sliding_window", s.sliding_window);
    if (s.swa_pattern != 6) w.set_uint32(a + "attention.sliding_window_pattern", s.swa_pattern);
  }
  SynthVocab v = synth_vocab(s.n_vocab);
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string("tokenizer.ggml.pre", "default");
  w.set_string_array("tokenizer.ggml.tokens", v.tokens);
  w.set_float_array("tokenizer.ggml.scores", v.scores);
  w.set_int32_array("tokenizer.ggml.token_type", v.types);
  w.set_uint32("tokenizer.ggml.bos_token_id", 1);
  w.set_uint32("tokenizer.ggml.eos_token_id", 2);
  w.set_uint32("tokenizer.ggml.unknown_token_id", 0);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_bool("tokenizer.ggml.add_eos_token", false);
  for (TensorSpec& t : tensor_specs(s)) {
    std::vector<uint64_t> ne = t.rows > 1 ? std::vector<uint64_t>{t.cols, t.rows} : std::vector<uint64_t>{t.cols};
    const uint64_t seed = s.seed;
    GgufWriter::Fill fill = [t, seed](uint8_t* dst) { fill_tensor(t, seed, dst); };
    if (!with_fill) fill = [](uint8_t*) { throw Error(ErrorKind::Internal, "synth: size-only writer"); };
    w.add_tensor_lazy(t.name, t.type, std::move(ne), std::move(fill));
  }
  return w;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

void check_synth_shape(const SynthShape& s) {
  if (s.arch != "llama" && s.arch != "qwen2" && s.arch != "qwen3" && s.arch != "gemma3")
    throw Error(ErrorKind::InvalidArgument, "unsupported architecture '" + s.arch + "' (llama, qwen2, qwen3, gemma3)");
  if (s.arch == "gemma3" && (s.sliding_window == 0 || s.sliding_window > (1u << 24)))
    throw Error(ErrorKind::InvalidArgument, "gemma3 needs a sliding window (swa=N, 1..16777216)");
  auto positive = [](uint64_t v, const char* what, uint64_t max) {
    if (v == 0 || v > max)
      throw Error(ErrorKind::InvalidArgument,
                  std::string(what) + " = " + std::to_string(v) + " is out of range (1.." + std::to_string(max) + ")");
  };
  // The bounds host/model/model.cpp accepts.
  positive(s.n_embd, "dim", 1u << 16);
  positive(s.n_layer, "layers", 1024);
  positive(s.n_head, "heads", 1024);
  positive(s.n_head_kv, "kv_heads", 1024);
  positive(s.n_ff, "ff", 1u << 20);
  positive(s.n_vocab, "vocab", 1u << 22);
  positive(s.n_ctx, "ctx", 1u << 24);
  if (s.n_head % s.n_head_kv)
    throw Error(ErrorKind::InvalidArgument, "heads = " + std::to_string(s.n_head) +
                                                " is not a multiple of kv_heads = " + std::to_string(s.n_head_kv));
  if (!s.head_dim && s.n_embd % s.n_head)
    throw Error(ErrorKind::InvalidArgument, "dim = " + std::to_string(s.n_embd) + " is not a multiple of heads = " +
                                                std::to_string(s.n_head) + " (give head_dim)");
  const uint32_t hd = s.head_size();
  if (hd % 2 || hd > SNAPVK_MAX_HEAD_DIM)
    throw Error(ErrorKind::InvalidArgument, "head_dim = " + std::to_string(hd) + " must be even and at most " +
                                                std::to_string(SNAPVK_MAX_HEAD_DIM));
  if (s.n_vocab < kSynthMinVocab)
    throw Error(ErrorKind::InvalidArgument, "vocab = " + std::to_string(s.n_vocab) + " is too small (at least " +
                                                std::to_string(kSynthMinVocab) +
                                                ": 3 special tokens, 256 byte tokens and a few pieces)");
  if (!(s.rope_base > 0) || !std::isfinite(s.rope_base))
    throw Error(ErrorKind::InvalidArgument, "rope_base must be positive");
  check_type(s.weight_type, "weight type");
  check_type(s.embedding_type(), "embedding type");
  check_rows(s.embedding_type(), s.n_embd, "dim");
  check_rows(s.weight_type, s.n_embd, "dim");
  check_rows(s.weight_type, uint64_t(s.n_head) * hd, "heads * head_dim");
  check_rows(s.weight_type, s.n_ff, "ff");
}

const SynthShape* synth_preset(std::string_view name) {
  auto make = [](uint32_t dim, uint32_t layers, uint32_t heads, uint32_t kv, uint32_t ff, uint32_t vocab, uint32_t ctx,
                 uint32_t head_dim, float rope_base) {
    SynthShape s;
    s.n_embd = dim, s.n_layer = layers, s.n_head = heads, s.n_head_kv = kv, s.n_ff = ff, s.n_vocab = vocab,
    s.n_ctx = ctx;
    s.head_dim = head_dim, s.rope_base = rope_base;
    return s;
  };
  // Llama 3 shapes ("1b", "8b-attn") take Llama 3's rope base too.
  static const std::map<std::string, SynthShape, std::less<>> presets = {
      {"tiny", make(64, 2, 4, 2, 192, 512, 1024, 0, 10000.0f)},
      {"small-gqa", make(256, 4, 8, 4, 704, 4096, 32768, 0, 10000.0f)},
      {"155m", make(1024, 8, 16, 4, 2816, 32000, 32768, 0, 10000.0f)},
      {"1b", make(2048, 16, 32, 8, 8192, 128256, 131072, 64, 500000.0f)},
      {"8b-attn", make(4096, 32, 32, 8, 14336, 128256, 131072, 0, 500000.0f)},
  };
  auto it = presets.find(name);
  return it == presets.end() ? nullptr : &it->second;
}

std::vector<std::string> synth_preset_names() { return {"tiny", "small-gqa", "155m", "1b", "8b-attn"}; }

SynthShape parse_synth_shape(const std::string& spec) {
  SynthShape s;
  bool have_kv = false, have_ctx = false;
  std::map<std::string, bool> required = {
      {"dim", false}, {"layers", false}, {"heads", false}, {"ff", false}, {"vocab", false}};
  auto number = [&](const std::string& key, const std::string& val, uint64_t max) {
    size_t used = 0;
    unsigned long long v = 0;
    try {
      if (!val.empty() && val[0] != '-') v = std::stoull(val, &used, 10);
    } catch (...) {
      used = 0;
    }
    if (val.empty() || used != val.size() || v > max)
      throw Error(ErrorKind::InvalidArgument,
                  "shape: " + key + "=" + val + ": not a whole number in 0.." + std::to_string(max));
    return v;
  };
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t end = spec.find(',', pos);
    if (end == std::string::npos) end = spec.size();
    const std::string item = spec.substr(pos, end - pos);
    pos = end + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) throw Error(ErrorKind::InvalidArgument, "shape: '" + item + "' is not key=value");
    const std::string key = item.substr(0, eq), val = item.substr(eq + 1);
    const uint64_t u32 = UINT32_MAX;
    if (required.count(key)) required[key] = true;
    if (key == "dim")
      s.n_embd = uint32_t(number(key, val, u32));
    else if (key == "layers")
      s.n_layer = uint32_t(number(key, val, u32));
    else if (key == "heads")
      s.n_head = uint32_t(number(key, val, u32));
    else if (key == "kv_heads")
      s.n_head_kv = uint32_t(number(key, val, u32)), have_kv = true;
    else if (key == "ff")
      s.n_ff = uint32_t(number(key, val, u32));
    else if (key == "vocab")
      s.n_vocab = uint32_t(number(key, val, u32));
    else if (key == "ctx")
      s.n_ctx = uint32_t(number(key, val, u32)), have_ctx = true;
    else if (key == "head_dim")
      s.head_dim = uint32_t(number(key, val, u32));
    else if (key == "seed")
      s.seed = number(key, val, UINT64_MAX);
    else if (key == "tied")
      s.tied_output = number(key, val, 1) != 0;
    else if (key == "swa")
      s.sliding_window = uint32_t(number(key, val, u32));
    else if (key == "swa_pattern")
      s.swa_pattern = uint32_t(number(key, val, 1024));
    else if (key == "arch")
      s.arch = val;
    else if (key == "rope_base") {
      size_t used = 0;
      try {
        s.rope_base = std::stof(val, &used);
      } catch (...) {
        used = 0;
      }
      if (val.empty() || used != val.size())
        throw Error(ErrorKind::InvalidArgument, "shape: rope_base=" + val + ": not a number");
    } else {
      throw Error(ErrorKind::InvalidArgument, "shape: unknown key '" + key +
                                                  "' (keys: dim, layers, heads, kv_heads, ff, vocab, ctx, arch, "
                                                  "head_dim, rope_base, tied, seed, swa, swa_pattern)");
    }
  }
  for (const auto& [key, seen] : required)
    if (!seen)
      throw Error(ErrorKind::InvalidArgument, "shape: missing " + key + "=N (needs dim, layers, heads, ff and vocab)");
  if (!have_kv) s.n_head_kv = s.n_head;
  if (!have_ctx) s.n_ctx = 4096;
  try {
    check_synth_shape(s);
  } catch (const Error& e) {
    throw Error(e.kind(), std::string("shape: ") + e.what(), e.param());
  }
  return s;
}

uint64_t synth_param_count(const SynthShape& s) {
  check_synth_shape(s);
  uint64_t n = 0;
  for (const TensorSpec& t : tensor_specs(s)) n += t.cols * t.rows;
  return n;
}

uint64_t synth_file_bytes(const SynthShape& s) { return synth_writer(s, false).file_size(); }

void write_synth_gguf(const SynthShape& s, const std::string& path) { synth_writer(s, true).write(path); }

void rewrite_gguf(const GgufFile& src, GgmlType type, const std::string& path) {
  check_type(type, "target type");
  GgufWriter w;
  for (const GgufKv& kv : src.metadata()) w.set_value(kv.key, kv.value);
  w.set_uint32("general.file_type", llama_ftype(type));
  const uint32_t block = traits_of(type).block_size;
  for (const GgufTensor& t : src.tensors()) {
    std::vector<uint64_t> ne(t.ne, t.ne + std::max<uint32_t>(t.n_dims, 1));
    const bool convert = t.n_dims == 2 && ends_with(t.name, ".weight") && t.type != type &&
                         traits_of(t.type).supported && t.ne[0] % block == 0;
    if (!convert) {
      const GgufTensor* p = &t;
      w.add_tensor_lazy(t.name, t.type, std::move(ne), [p](uint8_t* dst) { std::memcpy(dst, p->data, p->nbytes); });
      continue;
    }
    const GgufTensor* p = &t;
    w.add_tensor_lazy(t.name, type, std::move(ne), [p, type](uint8_t* dst) {
      const uint64_t cols = p->ne[0], rows = p->ne[1];
      const uint64_t src_rb = row_bytes(p->type, cols), dst_rb = row_bytes(type, cols);
      parallel_rows(rows, cols, [&](uint64_t r0, uint64_t r1) {
        std::vector<float> row(cols);
        for (uint64_t r = r0; r < r1; ++r) {
          dequantize_row(p->type, p->data + r * src_rb, row.data(), int64_t(cols));
          quantize_row(type, row.data(), dst + r * dst_rb, int64_t(cols));
        }
      });
    });
  }
  w.write(path);
}

}  // namespace snapvk
