// Synthetic models (host/report/synth.h): shapes, presets, vocabulary, determinism, re-quantization, and
// whole-model GPU logits against the CPU reference for every architecture feature and weight type.
#include <gtest/gtest.h>

#include <unistd.h>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "host/gguf/gguf.h"
#include "host/gguf/gguf_writer.h"
#include "host/ref/ref_model.h"
#include "host/report/synth.h"
#include "host/session/sampler.h"
#include "host/session/session.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with everything in it.
struct TempDir {
  fs::path path;
  TempDir() {
    static int n = 0;
    path = fs::temp_directory_path() / ("snapvk-synth-" + std::to_string(getpid()) + "-" + std::to_string(n++));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

SynthShape shape(uint32_t dim, uint32_t heads, uint32_t kv, GgmlType type = GgmlType::F16, uint32_t head_dim = 0) {
  SynthShape s;
  s.n_embd = dim, s.n_layer = 2, s.n_head = heads, s.n_head_kv = kv, s.head_dim = head_dim;
  s.n_ff = 512, s.n_vocab = 384, s.n_ctx = 256, s.weight_type = type;
  return s;
}

// By field, so options added to SessionOptions later keep their defaults (a full cache).
SessionOptions session_options(uint32_t n_ctx, uint32_t n_batch, KvType kv_type) {
  SessionOptions o;
  o.n_ctx = n_ctx, o.n_batch = n_batch, o.kv_type_k = o.kv_type_v = kv_type;
  return o;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- CPU only ----

TEST(Synth, PresetsHaveTheDocumentedShapes) {
  EXPECT_EQ(synth_preset_names(), (std::vector<std::string>{"tiny", "small-gqa", "155m", "1b", "8b-attn"}));
  for (const auto& name : synth_preset_names()) {
    ASSERT_NE(synth_preset(name), nullptr) << name;
    EXPECT_NO_THROW(check_synth_shape(*synth_preset(name))) << name;
  }
  EXPECT_EQ(synth_preset("nope"), nullptr);
  const SynthShape& g = *synth_preset("small-gqa");
  EXPECT_EQ(std::vector<uint32_t>({g.n_embd, g.n_layer, g.n_head, g.n_head_kv, g.n_ff, g.n_vocab, g.n_ctx}),
            std::vector<uint32_t>({256, 4, 8, 4, 704, 4096, 32768}));
  EXPECT_EQ(synth_preset("1b")->head_size(), 64u);
  EXPECT_EQ(synth_preset("8b-attn")->head_size(), 128u);
  // tiny: embeddings and lm head 2 * 512 * 64, output norm 64, per layer 2 norms, q/o 64x64, k/v 32x64, 3 * 64x192.
  EXPECT_EQ(synth_param_count(*synth_preset("tiny")),
            2u * 512 * 64 + 64 + 2 * (2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 192));
  EXPECT_NEAR(double(synth_param_count(*synth_preset("155m"))), 155.7e6, 0.1e6);
  EXPECT_NEAR(double(synth_param_count(*synth_preset("8b-attn"))), 8.03e9, 0.01e9);  // Llama 3 8B's count
}

TEST(Synth, ParseShape) {
  SynthShape s = parse_synth_shape("dim=256,layers=4,heads=8,kv_heads=4,ff=704,vocab=4096,ctx=32768,arch=llama");
  EXPECT_EQ(std::vector<uint32_t>({s.n_embd, s.n_layer, s.n_head, s.n_head_kv, s.n_ff, s.n_vocab, s.n_ctx}),
            std::vector<uint32_t>({256, 4, 8, 4, 704, 4096, 32768}));
  s = parse_synth_shape("dim=128,layers=1,heads=4,ff=256,vocab=300,head_dim=64,arch=qwen2,tied=1,seed=9,rope_base=5e5");
  EXPECT_EQ(s.n_head_kv, 4u);  // defaults to heads
  EXPECT_EQ(s.n_ctx, 4096u);
  EXPECT_EQ(s.head_size(), 64u);
  EXPECT_EQ(s.arch, "qwen2");
  EXPECT_TRUE(s.tied_output);
  EXPECT_EQ(s.seed, 9u);
  EXPECT_FLOAT_EQ(s.rope_base, 5e5f);
  const std::string base = "layers=1,heads=4,ff=256,vocab=300";
  EXPECT_NE(error_of([&] { parse_synth_shape(base); }).find("missing dim"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_synth_shape(base + ",dim=12x"); }).find("dim=12x: not a whole number"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse_synth_shape(base + ",dim=-4"); }).find("not a whole number"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_synth_shape(base + ",dim=128,colour=red"); }).find("unknown key 'colour'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse_synth_shape(base + ",dim=128,oops"); }).find("'oops' is not key=value"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse_synth_shape(base + ",dim=130"); }).find("not a multiple of heads"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_synth_shape(base + ",dim=128,kv_heads=3"); }).find("not a multiple of kv_heads"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse_synth_shape(base + ",dim=128,arch=gpt2"); }).find("unsupported architecture 'gpt2'"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              parse_synth_shape("dim=128,layers=1,heads=4,ff=256,vocab=100");
            }).find("vocab = 100 is too small"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse_synth_shape(base + ",dim=0"); }).find("dim = 0 is out of range"), std::string::npos);
}

TEST(Synth, KQuantsNeedRowsOf256) {
  SynthShape s = *synth_preset("small-gqa");  // ff 704 = 2.75 * 256
  s.weight_type = GgmlType::Q4_K;
  EXPECT_NE(error_of([&] { check_synth_shape(s); }).find("q4_K needs rows that are multiples of 256: ff = 704"),
            std::string::npos);
  s.weight_type = GgmlType::Q8_0;
  EXPECT_NO_THROW(check_synth_shape(s));
  s.weight_type = GgmlType::IQ4_XS;
  EXPECT_NE(error_of([&] { check_synth_shape(s); }).find("iq4_xs needs rows that are multiples of 256: ff = 704"),
            std::string::npos);
  s.weight_type = GgmlType::Q5_1;
  EXPECT_NO_THROW(check_synth_shape(s));
  s.weight_type = GgmlType::IQ2_XXS;
  EXPECT_NE(error_of([&] { check_synth_shape(s); }).find("iq2_xxs is not supported (supported: f32, f16, q4_0"),
            std::string::npos);
}

TEST(Synth, VocabularyTokenizesEnglishIntoWords) {
  EXPECT_NE(error_of([] { synth_vocab(kSynthMinVocab - 1); }).find("too small"), std::string::npos);
  for (uint32_t n : {kSynthMinVocab, 300u, 4096u}) {
    SynthVocab v = synth_vocab(n);
    ASSERT_EQ(v.tokens.size(), n);
    Vocab voc = vocab_defaults("llama");
    voc.tokens = v.tokens, voc.scores = v.scores, voc.types = v.types;
    Tokenizer tok(voc);  // throws on duplicates
    const std::string text = "Once upon a time, there was a little girl named Lily. Zebras! 42";
    EXPECT_EQ(tok.decode(tok.encode(text, false)), " " + text) << n;  // byte fallback covers everything
  }
  TempDir dir;
  SynthShape s = shape(64, 2, 2);
  s.n_vocab = 600;
  write_synth_gguf(s, dir.file("v.gguf"));
  GgufFile f = GgufFile::open(dir.file("v.gguf"));
  Tokenizer tok(vocab_from_gguf(f));
  EXPECT_EQ(tok.n_vocab(), 600);
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_EQ(tok.eos(), 2);
  EXPECT_EQ(tok.token_to_piece(3 + 'A'), "A");  // <0x41>
  auto ids = tok.encode("Once upon a time, there was a little girl", true);
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(tok.token_to_piece(id));
  EXPECT_EQ(pieces, (std::vector<std::string>{"", " Once", " upon", " a", " time", ",", " there", " was", " a",
                                              " little", " girl"}));
}

TEST(Synth, WritesTheMetadataLlamaCppReads) {
  TempDir dir;
  SynthShape s = shape(128, 2, 1, GgmlType::Q8_0, 32);  // q_dim 64 != dim: needs key_length
  s.arch = "qwen2";
  write_synth_gguf(s, dir.file("m.gguf"));
  GgufFile f = GgufFile::open(dir.file("m.gguf"));
  EXPECT_EQ(f.require_string("general.architecture"), "qwen2");
  EXPECT_EQ(f.require_uint("general.file_type"), 7u);  // LLAMA_FTYPE_MOSTLY_Q8_0
  EXPECT_EQ(f.require_uint("qwen2.embedding_length"), 128u);
  EXPECT_EQ(f.require_uint("qwen2.attention.key_length"), 32u);
  EXPECT_EQ(f.require_uint("qwen2.rope.dimension_count"), 32u);
  EXPECT_EQ(f.require_uint("qwen2.context_length"), 256u);
  EXPECT_EQ(f.require_string("tokenizer.ggml.model"), "llama");
  EXPECT_TRUE(f.require_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(f.require_tensor("blk.1.attn_q.weight", {128, 64}).type, GgmlType::Q8_0);
  EXPECT_EQ(f.require_tensor("blk.1.attn_output.weight", {64, 128}).type, GgmlType::Q8_0);
  EXPECT_EQ(f.require_tensor("blk.1.attn_k.bias", {32}).type, GgmlType::F32);
  EXPECT_EQ(f.require_tensor("blk.0.ffn_norm.weight", {128}).type, GgmlType::F32);
  EXPECT_TRUE(f.find_tensor("output.weight"));
  EXPECT_EQ(f.file_size(), synth_file_bytes(s));
  const ModelConfig c = ModelConfig::from_gguf(f);
  EXPECT_EQ(c.head_dim, 32u);
  EXPECT_EQ(c.group(), 2u);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_EQ(c.rope_type, RopeType::Neox);
  // No key_length when head_dim is dim / heads (llama.cpp's default); tied: no output.weight.
  s = shape(128, 2, 1);
  s.tied_output = true;
  write_synth_gguf(s, dir.file("t.gguf"));
  GgufFile t = GgufFile::open(dir.file("t.gguf"));
  EXPECT_FALSE(t.has("llama.attention.key_length"));
  EXPECT_FALSE(t.find_tensor("output.weight"));
}

TEST(Synth, SameShapeAndSeedGiveIdenticalBytes) {
  TempDir dir;
  SynthShape s = shape(256, 4, 2, GgmlType::Q4_K);
  write_synth_gguf(s, dir.file("a.gguf"));
  write_synth_gguf(s, dir.file("b.gguf"));
  s.seed = 2;
  write_synth_gguf(s, dir.file("c.gguf"));
  const std::string a = slurp(dir.file("a.gguf")), b = slurp(dir.file("b.gguf")), c = slurp(dir.file("c.gguf"));
  EXPECT_GT(a.size(), 100000u);
  EXPECT_TRUE(a == b) << "same shape and seed, different bytes";
  EXPECT_EQ(a.size(), c.size());
  EXPECT_FALSE(a == c) << "another seed, same bytes";
}

// write_synth_gguf makes each tensor while writing (GgufWriter::add_tensor_lazy); a failure
// there must leave neither the file nor its temporary behind.
TEST(Synth, FailedLazyTensorLeavesNoFile) {
  TempDir dir;
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.add_tensor_lazy("a", GgmlType::F32, {4}, [](uint8_t* dst) { std::memset(dst, 0, 16); });
  w.add_tensor_lazy("b", GgmlType::F32, {4}, [](uint8_t*) { throw Error(ErrorKind::Io, "no data for b"); });
  EXPECT_NE(error_of([&] { w.write(dir.file("x.gguf")); }).find("no data for b"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir.file("x.gguf")));
  EXPECT_FALSE(fs::exists(dir.file("x.gguf.tmp")));
}

// The weights keep the network sane in depth: finite logits of order 1, no token dominating.
TEST(Synth, LogitsStaySaneAtDepth) {
  TempDir dir;
  SynthShape s = shape(64, 4, 2, GgmlType::F32);
  s.n_layer = 24, s.n_ff = 192;
  for (bool tied : {false, true}) {
    s.tied_output = tied;
    write_synth_gguf(s, dir.file("deep.gguf"));
    GgufFile f = GgufFile::open(dir.file("deep.gguf"));
    RefModel ref(f, ModelConfig::from_gguf(f), 64);
    for (int pos = 0; pos < 8; ++pos) {
      const std::vector<float> l = ref.forward(10 + 37 * pos);
      double mean = 0, sq = 0, mx = -1e30, z = 0;
      for (float v : l) ASSERT_TRUE(std::isfinite(v));
      for (float v : l) mean += v, mx = std::max(mx, double(v));
      mean /= l.size();
      for (float v : l) sq += (v - mean) * (v - mean), z += std::exp(v - mx);
      const double sd = std::sqrt(sq / l.size());
      EXPECT_GT(sd, 0.3) << "tied " << tied << " pos " << pos;
      EXPECT_LT(sd, 3.0) << "tied " << tied << " pos " << pos;
      EXPECT_LT(1.0 / z, 0.5) << "top token probability, tied " << tied << " pos " << pos;
    }
  }
}

TEST(Synth, RewriteConvertsMatricesOnly) {
  TempDir dir;
  GgufFile src = GgufFile::open(model_path("stories260K.gguf"));
  rewrite_gguf(src, GgmlType::Q8_0, dir.file("q8.gguf"));
  GgufFile q = GgufFile::open(dir.file("q8.gguf"));
  ASSERT_EQ(q.tensors().size(), src.tensors().size());
  for (size_t i = 0; i < q.tensors().size(); ++i) {
    const GgufTensor &a = src.tensors()[i], &b = q.tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.shape_string(), b.shape_string());
    // ffn_down rows are 172 wide, not whole q8_0 blocks: they stay f32, as do the norms.
    const bool converts = a.n_dims == 2 && a.ne[0] % 32 == 0;
    EXPECT_EQ(b.type, converts ? GgmlType::Q8_0 : a.type) << a.name;
  }
  ASSERT_EQ(q.metadata().size(), src.metadata().size() + (src.has("general.file_type") ? 0 : 1));
  for (const GgufKv& kv : src.metadata()) {
    if (kv.key == "general.file_type") continue;
    EXPECT_EQ(q.find(kv.key)->type_string(), kv.value.type_string()) << kv.key;
  }
  EXPECT_EQ(q.get_string_array("tokenizer.ggml.tokens"), src.get_string_array("tokenizer.ggml.tokens"));
  EXPECT_EQ(q.require_uint("general.file_type"), 7u);
  EXPECT_NE(error_of([&] { rewrite_gguf(src, GgmlType::IQ2_XXS, dir.file("x.gguf")); }).find("not supported"),
            std::string::npos);
}

// ---- GPU against the CPU reference ----

// Tolerances are on max |logit difference|, the logits being ~N(0, 1). The GPU and the reference
// read the same dequantized weights, so with an f32 cache only the summation order differs:
// seen <= 5e-6 on lavapipe, allowed 1e-4. An f16 cache: seen <= 2e-3, allowed 1e-2.
constexpr float kTolF32Kv = 1e-4f, kTolF16Kv = 1e-2f;

struct Case {
  std::string name;
  SynthShape shape;
};

Case make_case(std::string name, SynthShape s) { return Case{std::move(name), std::move(s)}; }
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> cases() {
  using T = GgmlType;
  std::vector<Case> c;
  // Weight types on one shape: dim 256 and ff 512 are whole K-quant super-blocks; head_dim 64, GQA 2.
  for (T t : {T::F32, T::F16, T::BF16, T::Q8_0, T::Q4_0, T::Q4_K, T::Q6_K, T::Q4_1, T::Q5_0, T::Q5_1, T::Q2_K, T::Q3_K,
              T::Q5_K, T::IQ4_NL, T::IQ4_XS})
    c.push_back(make_case(std::string("llama_hd64_g2_") + type_name(t), shape(256, 4, 2, t)));
  c.push_back(make_case("llama_hd128_g2", shape(256, 2, 1)));
  c.push_back(make_case("llama_hd64_g1", shape(128, 2, 2)));
  c.push_back(make_case("llama_hd64_g4_qdim512", shape(256, 8, 2, GgmlType::F16, 64)));  // key_length != dim / heads
  c.push_back(make_case("llama_hd32_g8", shape(256, 8, 1)));
  SynthShape q = shape(256, 4, 2);
  q.arch = "qwen2";  // q/k/v biases, NEOX rope
  c.push_back(make_case("qwen2_hd64_g2", q));
  q.arch = "qwen3";  // no biases, per-head q/k RMSNorm before RoPE, NEOX rope
  c.push_back(make_case("qwen3_hd64_g2", q));
  SynthShape q3 = shape(256, 8, 2, GgmlType::F16, 128);  // head_dim 128 != dim / heads, as Qwen3's
  q3.arch = "qwen3";
  c.push_back(make_case("qwen3_hd128_g4_qdim1024", q3));
  // gemma3: 3 layers with pattern 3 (two sliding-window layers, then a global one), window 8 < the
  // 28-token prompt: rings of 8 + batch - 1 slots wrap (batch 1, 7), or hold all 64 (batch 64).
  SynthShape g = shape(256, 4, 2);
  g.arch = "gemma3", g.n_layer = 3, g.sliding_window = 8, g.swa_pattern = 3, g.tied_output = true;
  c.push_back(make_case("gemma3_hd64_g2_swa8", g));
  g = shape(128, 2, 1);
  g.arch = "gemma3", g.n_layer = 6, g.sliding_window = 5, g.tied_output = true;  // Gemma's own pattern: 5 + 1
  c.push_back(make_case("gemma3_hd64_g2_swa5_pattern6", g));
  SynthShape tied = shape(128, 2, 1);
  tied.tied_output = true;
  tied.embd_type = GgmlType::Q8_0;
  c.push_back(make_case("llama_tied_q8_0_embd", tied));
  return c;
}

class SynthModelVsRef : public VkTest, public ::testing::WithParamInterface<Case> {};

float max_diff(std::span<const float> got, const std::vector<float>& want) {
  return max_abs_diff(std::vector<float>(got.begin(), got.end()), want);
}

TEST_P(SynthModelVsRef, PrefillAndDecodeMatchCpuReference) {
  // (gemma3 cases also cover sliding-window rings, embedding scale, post-norms, GELU)
  const Case& c = GetParam();
  TempDir dir;
  write_synth_gguf(c.shape, dir.file("m.gguf"));
  Model m(k(), dir.file("m.gguf"));
  const ModelConfig& cfg = m.config();
  EXPECT_EQ(cfg.head_dim, c.shape.head_size());
  EXPECT_EQ(cfg.n_head_kv, c.shape.n_head_kv);
  const std::vector<int32_t> prompt =
      m.tokenizer().encode("Once upon a time, there was a little girl named Lily. She loved the red ball.", true);
  ASSERT_GE(prompt.size(), 18u);

  // Reference logits after every prompt token, then after 3 greedy decode steps.
  constexpr int kDecode = 3;
  RefModel ref(m.gguf(), cfg, 64);
  std::vector<std::vector<float>> want;
  for (int32_t t : prompt) want.push_back(ref.forward(t));
  std::vector<int32_t> next;
  for (int i = 0; i < kDecode; ++i) {
    next.push_back(argmax(want.back()));
    want.push_back(ref.forward(next.back()));
  }
  for (const auto& w : want)
    for (float v : w) ASSERT_TRUE(std::isfinite(v));

  float worst_f32 = 0, worst_f16 = 0;
  for (uint32_t batch : {1u, 7u, 64u}) {
    Session s(m, session_options(64, batch, KvType::F32));
    float d = max_diff(s.prefill(prompt), want[prompt.size() - 1]);
    EXPECT_LE(d, kTolF32Kv) << "prefill, batch " << batch;
    worst_f32 = std::max(worst_f32, d);
    for (int i = 0; i < kDecode; ++i) {
      d = max_diff(s.decode(next[i]), want[prompt.size() + i]);
      EXPECT_LE(d, kTolF32Kv) << "decode " << i << ", batch " << batch;
      worst_f32 = std::max(worst_f32, d);
    }
  }
  // An f16 cache rounds K and V to 11 significant bits: close, not exact.
  Session s(m, session_options(64, 8, KvType::F16));
  worst_f16 = max_diff(s.prefill(prompt), want[prompt.size() - 1]);
  EXPECT_LE(worst_f16, kTolF16Kv) << "prefill, f16 cache";
  for (int i = 0; i < kDecode; ++i) {
    const float d = max_diff(s.decode(next[i]), want[prompt.size() + i]);
    EXPECT_LE(d, kTolF16Kv) << "decode " << i << ", f16 cache";
    worst_f16 = std::max(worst_f16, d);
  }
  std::printf("  %s: %zu prompt tokens, max |logit diff| %.2g (f32 cache), %.2g (f16 cache)\n", c.name.c_str(),
              prompt.size(), worst_f32, worst_f16);
}

INSTANTIATE_TEST_SUITE_P(Synth, SynthModelVsRef, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// Gemma 3 with SnapKV: only the global layer is compacted; the sliding-window layers keep their
// rings. The first logits come from full attention; decoding then equals the CPU reference whose
// global layer sees only the retained positions (and whose window layers see their windows).
struct SynthGemma3 : VkTest {};

TEST_F(SynthGemma3, SnapkvCompactsOnlyGlobalLayers) {
  TempDir dir;
  SynthShape g = shape(256, 4, 2);
  g.arch = "gemma3", g.n_layer = 3, g.sliding_window = 8, g.swa_pattern = 3, g.tied_output = true;
  write_synth_gguf(g, dir.file("g.gguf"));
  Model m(k(), dir.file("g.gguf"));
  const ModelConfig& cfg = m.config();
  ASSERT_TRUE(cfg.is_swa(0) && cfg.is_swa(1) && !cfg.is_swa(2));
  const std::vector<int32_t> prompt =
      m.tokenizer().encode("Once upon a time, there was a little girl named Lily. She loved the red ball.", true);
  const uint32_t L = uint32_t(prompt.size());
  ASSERT_GT(L, 24u);
  for (uint32_t n_batch : {5u, 64u}) {
    SessionOptions o = session_options(64, n_batch, KvType::F32);
    o.kv.policy = KvPolicy::SnapKV, o.kv.budget = 12, o.kv.window = 4, o.kv.kernel = 3;
    o.keep_selection = true;
    Session s(m, o);
    std::span<const float> logits = s.prefill(prompt);
    RefModel ref(m.gguf(), cfg, 64);
    std::vector<float> want;
    for (int32_t t : prompt) want = ref.forward(t);
    EXPECT_LE(max_diff(logits, want), kTolF32Kv) << "prefill, batch " << n_batch;
    ASSERT_EQ(s.selection().size(), 3u);
    for (uint32_t h = 0; h < cfg.n_head_kv; ++h) {
      EXPECT_EQ(s.selection()[2][h].size(), 12u);  // the budget, on the global layer
      EXPECT_EQ(s.selection()[0][h].size(), 8u);   // the window, on a sliding-window layer
    }
    EXPECT_EQ(s.cache().layer(0).ring, std::min(64u, 8 + n_batch - 1));
    EXPECT_EQ(s.cache().layer(2).ring, 0u);
    ref.restrict_prompt(L, s.selection());
    for (int step = 0; step < 6; ++step) {
      const int32_t next = argmax(logits);
      logits = s.decode(next);
      want = ref.forward(next);
      EXPECT_LE(max_diff(logits, want), kTolF32Kv) << "decode " << step << ", batch " << n_batch;
    }
    // The memory model counts both kinds of layer as the cache allocates them.
    const KvSize size = KvCache::size_after_prompt(cfg, {KvType::F32, KvType::F32}, o.kv, L, 64, n_batch);
    EXPECT_EQ(s.cache().allocated_bytes() + 3 * 8 * cfg.n_head_kv, size.allocated);  // + the heads tables
    const uint64_t row = 2ull * cfg.n_head_kv * kv_row_bytes(KvType::F32, cfg.head_dim);
    EXPECT_EQ(size.retained, row * (12 + (64 - L) + 2 * 8));
    const KvStats st = s.kv_stats();
    EXPECT_EQ(st.full_bytes, row * (s.n_past() + 2 * 8));  // global: every position; windows: 8 each
    EXPECT_EQ(st.retained_bytes, row * (12 + 6 + 2 * 8));
  }
  // A full cache: the rings are what the memory model says, and nothing is "compressed".
  Session full(m, session_options(64, 7, KvType::F16));
  full.prefill(prompt);
  const KvSize fs = KvCache::size_after_prompt(cfg, KvTypes{}, KvPolicyOptions{}, L, 64, 7);
  EXPECT_EQ(full.cache().allocated_bytes(), fs.allocated);
  EXPECT_EQ(fs.retained, KvCache::full_bytes(cfg, KvTypes{}, 64));  // dry-run rows of a full cache: ratio 1
  EXPECT_EQ(full.kv_stats().ratio(), 1.0);
}

// stories260K re-quantized: K-quants cannot apply to it (its rows are 64 and 172 wide, not
// multiples of 256), q8_0 converts every matrix but ffn_down (172 wide) and f16 all of them.
// The logit differences come from rounding the weights, so they are the same on any device:
// f16 <= 0.0113 and q8_0 <= 0.209 over the prompt (logits up to ~19), allowed 0.02 and 0.3.
struct SynthStories : VkTest {
  static Model& f32_model() { return stories_model(); }
  static std::vector<int32_t> greedy(const Model& m, const std::vector<int32_t>& prompt, size_t n,
                                     std::vector<std::vector<float>>* prompt_logits = nullptr) {
    Session s(m, session_options(256, 64, KvType::F32));
    std::vector<int32_t> out;
    std::span<const float> logits;
    for (int32_t t : prompt) {
      logits = s.decode(t);
      if (prompt_logits) prompt_logits->emplace_back(logits.begin(), logits.end());
    }
    while (out.size() < n) {
      out.push_back(argmax(logits));
      logits = s.decode(out.back());
    }
    return out;
  }
  void check(GgmlType type, float tol) {
    TempDir dir;
    rewrite_gguf(f32_model().gguf(), type, dir.file("s.gguf"));
    Model m(k(), dir.file("s.gguf"));
    const auto prompt = m.tokenizer().encode("Once upon a time", true);
    std::vector<std::vector<float>> want, got;
    const auto want_tokens = greedy(f32_model(), prompt, 50, &want);
    const auto got_tokens = greedy(m, prompt, 50, &got);
    for (size_t i = 0; i < prompt.size(); ++i) {
      float mag = 0;
      for (float v : want[i]) mag = std::max(mag, std::fabs(v));
      const float d = max_abs_diff(got[i], want[i]);
      std::printf("  %s: position %zu max |logit diff| %.5f (max |logit| %.2f)\n", type_name(type), i, d, mag);
      EXPECT_LE(d, tol) << type_name(type) << " position " << i;
    }
    EXPECT_EQ(got_tokens, want_tokens) << type_name(type);
  }
};

TEST_F(SynthStories, F16RewriteMatchesF32) { check(GgmlType::F16, 0.02f); }
TEST_F(SynthStories, Q8_0RewriteMatchesF32) { check(GgmlType::Q8_0, 0.3f); }

}  // namespace
}  // namespace snapvk::test
