// Arithmetic on untrusted numbers (issue 7): every size, count and offset computed from a GGUF
// file or an argument is checked, so a hostile value gives a snapvk::Error naming the quantity,
// never a wrapped size, a huge allocation or a crash. The GGUF reader's own checks are in
// test_gguf.cpp; these cover what is computed from its values and from options.
// Device-free tests build small hostile GGUF files with GgufWriter and stop at the config,
// vocabulary or memory model; only the Session, Buffer and CommandStream cases use the GPU.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <snapvk/snapvk.h>

#include "host/gguf/gguf.h"
#include "host/gguf/gguf_writer.h"
#include "host/kv/kv_policy.h"
#include "host/model/model.h"
#include "host/model/tokenizer.h"
#include "host/report/needle.h"
#include "host/report/profile.h"
#include "host/session/memory_model.h"
#include "host/session/session.h"
#include "runtime/checked.h"
#include "runtime/commands.h"
#include "runtime/error.h"
#include "runtime/memory.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

namespace fs = std::filesystem;
constexpr uint32_t kU32Max = std::numeric_limits<uint32_t>::max();
constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

// `f()` throws snapvk::Error whose message contains `what`.
void expect_error(const std::function<void()>& f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << what << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << "want '" << what << "' in: " << e.what();
  }
}

struct Gguf {
  Gguf() : dir(fs::temp_directory_path() / ("snapvk-overflow-" + std::to_string(getpid()))) {
    fs::create_directories(dir);
  }
  ~Gguf() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  // A tiny llama config (dim 64, 2 layers, 4/2 heads, ff 128, vocab 300) with `edit` applied;
  // token_embd is [emb_cols, vocab_rows] of `emb_type`, zeros. No other tensors: from_gguf
  // reads only the metadata and token_embd's row count.
  std::string config(const std::string& name, const std::function<void(GgufWriter&)>& edit, uint64_t vocab_rows = 300,
                     GgmlType emb_type = GgmlType::F32, uint64_t emb_cols = 64) {
    GgufWriter w;
    w.set_string("general.architecture", "llama");
    w.set_uint32("llama.embedding_length", 64);
    w.set_uint32("llama.block_count", 2);
    w.set_uint32("llama.attention.head_count", 4);
    w.set_uint32("llama.attention.head_count_kv", 2);
    w.set_uint32("llama.feed_forward_length", 128);
    w.set_uint32("llama.context_length", 256);
    if (edit) edit(w);
    const uint64_t bytes = row_bytes(emb_type, emb_cols) * vocab_rows;
    std::vector<uint8_t> zeros(bytes);
    w.add_tensor("token_embd.weight", emb_type, {emb_cols, vocab_rows}, zeros.data(), zeros.size());
    const std::string path = (dir / name).string();
    w.write(path);
    return path;
  }
  ModelConfig load(const std::string& name, const std::function<void(GgufWriter&)>& edit, uint64_t vocab_rows = 300,
                   GgmlType emb_type = GgmlType::F32, uint64_t emb_cols = 64) {
    return ModelConfig::from_gguf(GgufFile::open(config(name, edit, vocab_rows, emb_type, emb_cols)));
  }
  fs::path dir;
};

// The config of the tiny GGUF above, built by hand (as `snapvk profile --dry-run` does).
ModelConfig tiny_config() {
  ModelConfig c;
  c.arch_name = "llama";
  c.n_embd = 64, c.n_layer = 2, c.n_head = 4, c.n_head_kv = 2, c.head_dim = 16, c.n_ff = 128, c.n_vocab = 300;
  c.n_ctx_train = 256, c.n_rot = 16;
  return c;
}

MemoryQuery tiny_query() {
  MemoryQuery q;
  q.prompt_len = 100, q.n_ctx = 128, q.n_batch = 32;
  return q;
}

// ---- the shared helpers --------------------------------------------------------------------

TEST(Overflow, CheckedHelpersNameTheQuantity) {
  EXPECT_EQ(checked_mul(1ull << 32, 1ull << 31, "x"), 1ull << 63);
  expect_error([] { checked_mul(1ull << 32, 1ull << 32, "KV bytes"); },
               "KV bytes (4294967296 * 4294967296) overflows 64 bits");
  EXPECT_EQ(checked_add(kU64Max - 1, 1, "x"), kU64Max);
  expect_error([] { checked_add(kU64Max, 1, "peak"); }, "peak (18446744073709551615 + 1) overflows 64 bits");
  EXPECT_EQ(checked_mul_u32(65535, 65537, "x"), kU32Max);
  expect_error([] { checked_mul_u32(65536, 65536, "slots"); }, "slots (65536 * 65536) overflows 32 bits");
  expect_error([] { checked_mul_u32(kU64Max, 2, "slots"); }, "overflows 32 bits");  // the 64-bit product wraps too
  EXPECT_EQ(checked_range(5, 1, 5, "x"), 5u);
  expect_error([] { checked_range(0, 1, 5, "n_ctx"); }, "n_ctx 0 is out of range (1..5)");
}

// ---- numbers from a GGUF file --------------------------------------------------------------

TEST(Overflow, GgufHyperParametersAreBoundedBeforeUse) {
  Gguf g;
  EXPECT_EQ(g.load("good.gguf", nullptr).q_dim(), 64u);  // the baseline the cases break
  // 64-bit values that would truncate to small 32-bit ones, and 32-bit maxima.
  expect_error(
      [&] { g.load("embd.gguf", [](GgufWriter& w) { w.set_uint64("llama.embedding_length", (1ull << 32) + 64); }); },
      "llama.embedding_length = 4294967360 is out of range (1..65536)");
  expect_error([&] { g.load("layers.gguf", [](GgufWriter& w) { w.set_uint32("llama.block_count", kU32Max); }); },
               "llama.block_count = 4294967295 is out of range (1..1024)");
  expect_error(
      [&] { g.load("heads.gguf", [](GgufWriter& w) { w.set_uint64("llama.attention.head_count", 1ull << 40); }); },
      "llama.attention.head_count = 1099511627776 is out of range (1..1024)");
  expect_error([&] { g.load("kv.gguf", [](GgufWriter& w) { w.set_uint32("llama.attention.head_count_kv", 0); }); },
               "llama.attention.head_count_kv = 0 is out of range (1..1024)");
  expect_error([&] { g.load("ff.gguf", [](GgufWriter& w) { w.set_uint64("llama.feed_forward_length", kU64Max); }); },
               "llama.feed_forward_length = 18446744073709551615 is out of range (1..1048576)");
  expect_error([&] { g.load("ctx.gguf", [](GgufWriter& w) { w.set_uint32("llama.context_length", kU32Max); }); },
               "llama.context_length = 4294967295 is out of range (1..16777216)");
  expect_error([&] { g.load("hd.gguf", [](GgufWriter& w) { w.set_uint32("llama.attention.key_length", 1u << 31); }); },
               "llama.attention.key_length = 2147483648 is out of range (1..256)");
  expect_error(
      [&] { g.load("rot.gguf", [](GgufWriter& w) { w.set_uint64("llama.rope.dimension_count", 1ull << 33); }); },
      "llama.rope.dimension_count = 8589934592 is out of range (1..16)");
  // A negative value stored signed is not read as a huge unsigned one.
  expect_error([&] { g.load("neg.gguf", [](GgufWriter& w) { w.set_int32("llama.block_count", -1); }); }, "block_count");
  // The GQA group (n_head / n_head_kv) sizes the attention kernels: refused at load, not by an assert later.
  expect_error(
      [&] {
        g.load("group.gguf", [](GgufWriter& w) {
          w.set_uint32("llama.embedding_length", 128), w.set_uint32("llama.attention.head_count", 64);
        });
      },
      "model: GQA group n_head / n_head_kv = 32 is larger than 16");
}

TEST(Overflow, GgufWeightElementCountsFitThirtyTwoBits) {
  // Each dimension is within its bound; their products are not. The kernels index weight
  // elements with 32 bits, so these are refused before any tensor is read or uploaded.
  Gguf g;
  // n_vocab (token_embd rows) * n_embd: 65537 * 65536. q4_0 rows of 32 keep the file at 1.2 MB.
  expect_error(
      [&] {
        g.load(
            "vocab.gguf",
            [](GgufWriter& w) {
              w.set_uint32("llama.embedding_length", 65536), w.set_uint32("llama.attention.head_count", 1);
              w.set_uint32("llama.attention.head_count_kv", 1), w.set_uint32("llama.attention.key_length", 256);
              w.set_uint32("llama.attention.value_length", 256);
            },
            65537, GgmlType::Q4_0, 32);
      },
      "model: token_embd elements n_vocab * n_embd (65537 * 65536) overflows 32 bits");
  // n_head * head_dim * n_embd: 1024 * 256 * 65536 = 2^34.
  expect_error(
      [&] {
        g.load("q.gguf", [](GgufWriter& w) {
          w.set_uint32("llama.embedding_length", 65536), w.set_uint32("llama.attention.head_count", 1024);
          w.set_uint32("llama.attention.head_count_kv", 1024), w.set_uint32("llama.attention.key_length", 256);
        });
      },
      "model: attn_q elements n_head * head_dim * n_embd (262144 * 65536) overflows 32 bits");
  // n_ff * n_embd: 2^20 * 2^16.
  auto wide = [](uint32_t n_ff) {
    return [n_ff](GgufWriter& w) {
      w.set_uint32("llama.embedding_length", 65536), w.set_uint32("llama.attention.head_count", 256);
      w.set_uint32("llama.attention.head_count_kv", 256), w.set_uint32("llama.attention.key_length", 64);
      w.set_uint32("llama.feed_forward_length", n_ff);
    };
  };
  expect_error([&] { g.load("ffn.gguf", wide(1u << 20)); },
               "model: ffn elements n_ff * n_embd (1048576 * 65536) overflows 32 bits");
  expect_error([&] { g.load("ffn2.gguf", wide(65536)); }, "(65536 * 65536) overflows 32 bits");
  // The largest shapes that fit load (what a 405B-class model needs is well inside).
  const ModelConfig c = g.load("edge.gguf", wide(65535));
  EXPECT_EQ(c.q_dim(), 16384u);
  EXPECT_EQ(uint64_t(c.n_ff) * c.n_embd, 65535ull * 65536);
}

TEST(Overflow, HandBuiltConfigIsCheckedLikeAFile) {
  // ModelConfig is a public struct (profile --dry-run fills one from a synthetic shape): check()
  // and everything that computes sizes from it refuse what from_gguf would.
  EXPECT_NO_THROW(tiny_config().check());
  auto bad = [](const std::function<void(ModelConfig&)>& edit, const std::string& what) {
    ModelConfig c = tiny_config();
    edit(c);
    expect_error([&] { c.check(); }, what);
    expect_error([&] { estimate_memory(c, 0, tiny_query()); }, what);
  };
  bad([](ModelConfig& c) { c.n_head = c.n_head_kv = 1u << 20; }, "model: n_head 1048576 is out of range (1..1024)");
  bad([](ModelConfig& c) { c.head_dim = kU32Max; }, "model: head_dim 4294967295 is out of range (2..256)");
  bad([](ModelConfig& c) { c.n_layer = 0; }, "model: n_layer 0 is out of range (1..1024)");
  bad([](ModelConfig& c) { c.n_head_kv = 0; }, "model: n_head_kv 0 is out of range");  // no division by zero
  bad([](ModelConfig& c) { c.n_vocab = kU32Max; }, "model: n_vocab 4294967295 is out of range (1..4194304)");
  bad([](ModelConfig& c) { c.n_embd = 65536, c.n_vocab = 1u << 22; },
      "model: token_embd elements n_vocab * n_embd (4194304 * 65536) overflows 32 bits");
  bad([](ModelConfig& c) { c.n_rot = 18; }, "model: n_rot 18 is out of range (0..16)");
}

TEST(Overflow, RealModelShapesPassEveryBound) {
  // The bounds must refuse only hostile numbers: the largest shapes in use pass, at 128K, and
  // the memory model's figures are the sums of the buffers a session allocates, counted here
  // from the shapes (an f16 cache; every layer global).
  struct Shape {
    const char* name;
    uint32_t embd, layers, heads, kv_heads, head_dim, ff, vocab, ctx;
  };
  const Shape shapes[] = {
      {"Llama-3.1-8B", 4096, 32, 32, 8, 128, 14336, 128256, 131072},
      {"Llama-3.1-70B", 8192, 80, 64, 8, 128, 28672, 128256, 131072},
      {"Llama-3.1-405B", 16384, 126, 128, 8, 128, 53248, 128256, 131072},
      {"Qwen2-72B", 8192, 80, 64, 8, 128, 29568, 152064, 131072},
      {"Mistral-7B", 4096, 32, 32, 8, 128, 14336, 32000, 32768},
  };
  for (const Shape& m : shapes) {
    ModelConfig c;
    c.arch_name = "llama";
    c.n_embd = m.embd, c.n_layer = m.layers, c.n_head = m.heads, c.n_head_kv = m.kv_heads, c.head_dim = m.head_dim;
    c.n_ff = m.ff, c.n_vocab = m.vocab, c.n_ctx_train = m.ctx, c.n_rot = m.head_dim;
    EXPECT_NO_THROW(c.check()) << m.name;
    SCOPED_TRACE(m.name);
    const uint64_t weights = 200ull << 30, gen = 16, L = m.ctx - gen, B = 512, C = 1024, W = 32;
    MemoryQuery q;
    q.prompt_len = uint32_t(L), q.n_ctx = m.ctx, q.n_batch = uint32_t(B);
    // Per row of the batch: x and its norm, q and attn, k and v, gate and up; then one id per
    // row, the logits, and the decode partials (per head, per chunk of 256 positions: head_dim
    // outputs, a max and a sum). All f32.
    const uint64_t q_dim = uint64_t(m.heads) * m.head_dim, kv_dim = uint64_t(m.kv_heads) * m.head_dim;
    const uint64_t chunks = (uint64_t(m.ctx) + 255) / 256;
    const uint64_t activations = 4 * (B * (2 * m.embd + 2 * q_dim + 2 * kv_dim + 2 * m.ff) + B + m.vocab +
                                      uint64_t(m.heads) * chunks * (m.head_dim + 2));
    const uint64_t row = 2ull * m.head_dim;  // one f16 K or V row of one head
    const uint64_t full_kv = 2ull * m.layers * m.kv_heads * m.ctx * row;
    MemoryEstimate e;
    ASSERT_NO_THROW(e = estimate_memory(c, weights, q));
    EXPECT_EQ(e.weights, weights);
    EXPECT_EQ(e.activations, activations);
    EXPECT_EQ(e.kv_cache, full_kv);
    EXPECT_EQ(e.kv_full_equivalent, full_kv);
    EXPECT_EQ(e.prefill_transient, 0u);
    EXPECT_EQ(e.peak, weights + activations + full_kv);

    q.kv.policy = KvPolicy::SnapKV, q.kv.budget = uint32_t(C);
    ASSERT_EQ(q.kv.window, W);
    ASSERT_NO_THROW(e = estimate_memory(c, weights, q));
    // C entries and room for the generated tokens per head and layer, and each layer's heads table
    const uint64_t kept_kv = uint64_t(m.layers) * (2ull * m.kv_heads * (C + gen) * row + 8ull * m.kv_heads);
    // the prompt's hidden states, one layer's full K/V and heads table, the window's queries, the
    // prompt's words; then the selection's buffers: two selections of C - W per head and an info
    // table, each query's row max and sum, votes, pooled votes and completed words over P = L - W
    const uint64_t P = L - W;
    const uint64_t transient =
        4 * L * m.embd + 2ull * m.kv_heads * L * row + 8ull * m.kv_heads + 4 * W * q_dim + 4 * L +
        4 * (2 * m.kv_heads * (C - W) + 2ull * m.kv_heads + 2ull * m.heads * W + 3ull * m.kv_heads * P);
    EXPECT_EQ(e.kv_cache, kept_kv);
    EXPECT_EQ(e.kv_full_equivalent, full_kv);
    EXPECT_EQ(e.prefill_transient, transient);
    EXPECT_EQ(e.peak, weights + activations + kept_kv + transient);
    if (std::string(m.name) == "Llama-3.1-8B") {  // docs/profile.md's dry run: 16 GiB against 130 MiB
      EXPECT_EQ(full_kv, 16ull << 30);
      EXPECT_EQ(kept_kv, 130ull * (1 << 20) + 32 * 64);
    }
  }
}

TEST(Overflow, VocabularyIdsAndCountsFromGguf) {
  Gguf g;
  const std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "a", "b"};
  auto vocab = [&](const std::string& name, const std::function<void(GgufWriter&)>& edit) {
    const std::string path = g.config(name, [&](GgufWriter& w) {
      w.set_string("tokenizer.ggml.model", "llama");
      w.set_string_array("tokenizer.ggml.tokens", tokens);
      w.set_float_array("tokenizer.ggml.scores", std::vector<float>(tokens.size(), 0.0f));
      edit(w);
    });
    return vocab_from_gguf(GgufFile::open(path));
  };
  // Ids past the vocabulary (32-bit max, a 64-bit id that truncates to 1, a negative one) are
  // dropped, never used as indices.
  Vocab v = vocab("ids.gguf", [](GgufWriter& w) {
    w.set_uint32("tokenizer.ggml.bos_token_id", kU32Max);
    w.set_uint64("tokenizer.ggml.eos_token_id", (1ull << 32) + 1);
    w.set_int64("tokenizer.ggml.unknown_token_id", -5);
    w.set_bool("tokenizer.ggml.add_bos_token", false);
  });
  EXPECT_EQ(v.bos, 1);  // the default stays: a bad id never replaces it
  EXPECT_EQ(v.eos, 2);
  EXPECT_EQ(v.unk, 0);
  Tokenizer t(v);
  EXPECT_EQ(t.n_vocab(), 5);
  expect_error([&] { t.token_to_piece(int32_t(kU32Max >> 1)); }, "token id 2147483647 is out of range");
  // A 64-bit id beyond int64 is an error naming the key, not a wrapped id.
  expect_error([&] { vocab("id64.gguf", [](GgufWriter& w) { w.set_uint64("tokenizer.ggml.bos_token_id", kU64Max); }); },
               "tokenizer.ggml.bos_token_id' is 18446744073709551615, out of range for int64");
  // Parallel arrays shorter than the token list are refused (they are indexed by token id).
  expect_error(
      [&] {
        Tokenizer{vocab("scores.gguf", [](GgufWriter& w) { w.set_float_array("tokenizer.ggml.scores", {0.0f}); })};
      },
      "tokenizer.ggml.scores has 1 entries for 5 tokens");
  expect_error(
      [&] {
        Tokenizer{vocab("types.gguf", [](GgufWriter& w) { w.set_int32_array("tokenizer.ggml.token_type", {1, 1}); })};
      },
      "tokenizer.ggml.token_type has 2 entries for 5 tokens");
}

// ---- sizes from options (session shape, memory model, KV policy, profile) ------------------

TEST(Overflow, SessionShapeProductsFitThirtyTwoBits) {
  ModelConfig c = tiny_config();
  EXPECT_NO_THROW(check_session_shape(c, kMaxContext, 256));
  expect_error([&] { check_session_shape(c, 0, 256); }, "n_ctx 0 is out of range (1..16777216)");
  expect_error([&] { check_session_shape(c, kU32Max, 256); }, "n_ctx 4294967295 is out of range (1..16777216)");
  expect_error([&] { check_session_shape(c, kMaxContext + 1, 256); }, "n_ctx 16777217 is out of range");
  // KV rows of one layer (and heads-table offsets h * n_ctx) are 32-bit: 256 heads * 2^24 = 2^32.
  c.n_head = c.n_head_kv = 256, c.head_dim = 2, c.n_rot = 2;
  EXPECT_NO_THROW(check_session_shape(c, kMaxContext - 1, 1));
  expect_error([&] { check_session_shape(c, kMaxContext, 1); },
               "KV rows per layer n_head_kv * n_ctx (256 * 16777216) overflows 32 bits");
  // One batch's activations are 32-bit element counts: n_batch * n_ff = 4096 * 2^20.
  c = tiny_config();
  c.n_ff = 1u << 20;
  EXPECT_NO_THROW(check_session_shape(c, 4096, 4095));
  expect_error([&] { check_session_shape(c, 4096, 4096); },
               "activations n_batch * n_ff (4096 * 1048576) overflows 32 bits");
  // n_batch counts only up to n_ctx (a session clamps it).
  EXPECT_NO_THROW(check_session_shape(c, 16, kU32Max));
  c = tiny_config();
  c.n_embd = 65536;
  expect_error([&] { check_session_shape(c, 1u << 20, 1u << 20); },
               "activations n_batch * n_embd (1048576 * 65536) overflows 32 bits");
  c = tiny_config();
  c.n_head = c.n_head_kv = 1024, c.head_dim = 256;
  expect_error([&] { check_session_shape(c, 1u << 14, 1u << 14); },
               "activations n_batch * q_dim (16384 * 262144) overflows 32 bits");
}

TEST(Overflow, MemoryModelRefusesWhatWouldWrapAndIsExactAtTheEdge) {
  const ModelConfig c = tiny_config();
  auto bad = [&](const std::function<void(MemoryQuery&)>& edit, const std::string& what, uint64_t weights = 0) {
    MemoryQuery q = tiny_query();
    edit(q);
    expect_error([&] { estimate_memory(c, weights, q); }, what);
  };
  bad([](MemoryQuery& q) { q.n_ctx = kU32Max; }, "n_ctx 4294967295 is out of range");
  bad([](MemoryQuery& q) { q.prompt_len = kU32Max; },
      "memory model: prompt length 4294967295 is out of range (0..16777216)");
  bad([](MemoryQuery& q) { q.decode_chunk = 0; },
      "memory model: decode_chunk must be at least 1");  // was a division by zero
  bad([](MemoryQuery& q) { q.kv_type = KvType(7); }, "memory model: unknown KV type 7");
  bad([](MemoryQuery& q) { q.kv.policy = KvPolicy::SnapKV, q.kv.budget = 64, q.kv.window = kU32Max; },
      "KV window 4294967295 is too large");
  bad([](MemoryQuery&) {}, "memory model: peak bytes (18446744073709551615 + ", kU64Max);
  // The largest legal shape: every figure is the exact product (it would not fit 32 bits, and
  // the old 2^64-bit sums never get near wrapping).
  ModelConfig big = c;
  big.n_layer = 1024, big.n_head = big.n_head_kv = 255, big.head_dim = 256, big.n_rot = 256, big.n_embd = 16384;
  big.n_ff = 1u << 16, big.n_vocab = 1u << 16;
  MemoryQuery q;
  q.prompt_len = kMaxContext, q.n_ctx = kMaxContext, q.n_batch = 1, q.kv_type = KvType::F32;
  const MemoryEstimate e = estimate_memory(big, 0, q);
  EXPECT_EQ(e.kv_full_equivalent, 2ull * 1024 * 255 * kMaxContext * 1024);  // 8.2e15 bytes, not wrapped
  EXPECT_EQ(e.kv_cache, e.kv_full_equivalent);
  EXPECT_EQ(e.peak, e.activations + e.kv_cache);
  EXPECT_EQ(KvCache::full_bytes(big, KvType::F32, kMaxContext), e.kv_full_equivalent);
  expect_error([&] { KvCache::full_bytes(big, KvType::F32, kU64Max); }, "KV cache bytes");
}

TEST(Overflow, KvPolicyBudgetsWindowsAndSumsCannotWrap) {
  auto bad = [](const std::function<void(KvPolicyOptions&)>& edit, const std::string& what) {
    KvPolicyOptions o;
    o.policy = KvPolicy::SnapKV, o.budget = 64, o.window = 8;
    edit(o);
    expect_error([&] { o.validate(); }, what);
  };
  bad([](KvPolicyOptions& o) { o.budget = kU32Max; }, "KV budget 4294967295 is too large (at most 16777216)");
  bad([](KvPolicyOptions& o) { o.budget = 0, o.ratio = 0.5f, o.window = kU32Max; },
      "KV window 4294967295 is too large");
  // kernel / 2 is added to a position in a 32-bit int on the GPU (shaders/pool.comp).
  bad([](KvPolicyOptions& o) { o.kernel = kU32Max; }, "pooling kernel size 4294967295 is too large");
  // sinks + window used to wrap past the budget check: 2^32 - 4 + 8 = 4.
  bad([](KvPolicyOptions& o) { o.policy = KvPolicy::StreamingLLM, o.sinks = kU32Max - 3; },
      "sinks 4294967292 is too large");
  // budget_for: window + 1 with a ratio budget.
  KvPolicyOptions r;
  r.policy = KvPolicy::SnapKV, r.ratio = 0.5f, r.window = kMaxContext;
  r.validate();
  EXPECT_EQ(r.budget_for(100), kMaxContext + 1);
  // PyramidKV: 2 * (C - W) exceeded 32 bits for a long prompt and wrapped the first layers'
  // budgets down; now they saturate (a budget of L or more keeps the layer whole).
  KvPolicyOptions p;
  p.policy = KvPolicy::PyramidKV, p.ratio = 0.9f, p.window = 32;
  p.validate();
  const uint32_t L = kU32Max, C = p.budget_for(L);
  EXPECT_GT(C, 3'800'000'000u);
  const std::vector<uint32_t> b = p.layer_budgets(L, 8);
  EXPECT_EQ(b.front(), kU32Max);  // 2(C - W) - lo + W > 2^32: saturated, not wrapped
  for (size_t l = 1; l < b.size(); ++l) EXPECT_LE(b[l], b[l - 1]) << "layer " << l;
  const uint64_t lo = (uint64_t(C) - 32) / 20;
  EXPECT_EQ(b.back(), lo + 32 + (2 * (uint64_t(C) - 32) - lo - lo) % 7);  // hi - 7 * step, exactly
}

TEST(Overflow, ProfileContextListsAndRunLengths) {
  EXPECT_EQ(parse_token_counts("4194303k", "c"), std::vector<uint32_t>{4194303u * 1024});
  expect_error([] { parse_token_counts("4194304k", "c"); }, "'4194304k' is not a positive token count");
  // v * 1024 wrapped to 1024 (2^54 + 1 -> 2^64 + 1024) and to 0 for a negative number.
  expect_error([] { parse_token_counts("18014398509481985k", "c"); },
               "'18014398509481985k' is not a positive token count");
  expect_error([] { parse_token_counts("-18014398509481984k", "c"); }, "is not a positive token count");
  expect_error([] { parse_token_counts("-1", "c"); }, "is not a positive token count");
  expect_error([] { parse_token_counts("99999999999999999999999", "c"); }, "is not a positive token count");
  // Each run holds L + gen positions in a 32-bit n_ctx.
  ProfileOptions o;
  o.gen = 16;
  o.contexts = {kU32Max - 8};
  expect_error([&] { dry_run_profile(tiny_config(), 0, 0, o); },
               "context length 4294967287 plus 16 generated tokens is more than the 16777216 positions");
  o.contexts = {kMaxContext - 16};
  EXPECT_NO_THROW(dry_run_profile(tiny_config(), 0, 0, o));
  o.contexts = {kMaxContext - 15};
  expect_error([&] { dry_run_profile(tiny_config(), 0, 0, o); }, "positions a session may hold");
}

TEST(Overflow, DeviceMemoryBudgetSumDoesNotWrap) {
  MemoryTracker t;
  t.set_budget(1ull << 30);
  t.reserve(100, "a");
  // now + bytes = 100 + (2^64 - 50) wrapped to 50, inside the budget.
  expect_error([&] { t.reserve(kU64Max - 49, "huge"); }, "device memory budget exceeded: huge needs");
  expect_error([&] { t.reserve(1ull << 30, "one more"); }, "device memory budget exceeded");
  EXPECT_EQ(t.current(), 100u);
  EXPECT_NO_THROW(t.reserve((1ull << 30) - 100, "the rest"));
  EXPECT_EQ(t.current(), 1ull << 30);
}

// ---- on the device: a Session, buffers and command streams ---------------------------------

struct OverflowGpu : VkTest {
  static Model& model() {
    // Never destroyed: at exit the validation layer may already be gone (see gpu_fixture.cpp).
    static Model* m = new Model(kernels(), model_path("stories260K.gguf"));
    return *m;
  }
};

TEST_F(OverflowGpu, SessionRefusesHostileOptionsBeforeAllocating) {
  model();  // loaded (and its weights counted) before the baseline
  const uint64_t before = ctx().memory().current();
  auto bad = [&](const std::function<void(SessionOptions&)>& edit, const std::string& what) {
    SessionOptions o;
    o.n_ctx = 64;
    edit(o);
    expect_error([&] { Session s(model(), o); }, what);
    EXPECT_EQ(ctx().memory().current(), before) << what;
  };
  bad([](SessionOptions& o) { o.n_ctx = kU32Max; }, "n_ctx 4294967295 is out of range (1..16777216)");
  bad([](SessionOptions& o) { o.n_ctx = kMaxContext + 1; }, "n_ctx 16777217 is out of range");
  bad([](SessionOptions& o) { o.kv.policy = KvPolicy::SnapKV, o.kv.budget = kU32Max; },
      "KV budget 4294967295 is too large");
  bad([](SessionOptions& o) { o.kv.policy = KvPolicy::SnapKV, o.kv.budget = 32, o.kv.kernel = kU32Max; },
      "pooling kernel size 4294967295 is too large");
  // A huge n_batch is clamped to n_ctx, not multiplied.
  SessionOptions o;
  o.n_ctx = 64, o.n_batch = kU32Max;
  Session s(model(), o);
  EXPECT_EQ(s.options().n_batch, 64u);
}

TEST_F(OverflowGpu, ContextBeyondTheLargestStorageBindingIsRefusedUpFront) {
  const ModelConfig& c = model().config();
  const uint64_t per_pos = uint64_t(c.n_head_kv) * kv_row_bytes(KvType::F32, c.head_dim);
  const uint64_t limit = ctx().info().max_storage_buffer_range / per_pos;  // the largest n_ctx
  if (limit + 1 > kMaxContext) GTEST_SKIP() << "this device binds more than the largest context";
  const uint64_t before = ctx().memory().current();
  for (KvPolicy p : {KvPolicy::Full, KvPolicy::SnapKV}) {
    SessionOptions o;
    o.n_ctx = uint32_t(limit + 1);
    o.kv_type = KvType::F32;
    o.kv.policy = p;
    if (p == KvPolicy::SnapKV) o.kv.budget = 64;
    expect_error([&] { Session s(model(), o); }, "maxStorageBufferRange");
    expect_error([&] { Session s(model(), o); },
                 "the largest n_ctx for this model and KV type here is " + std::to_string(limit));
    EXPECT_EQ(ctx().memory().current(), before);
  }
}

TEST_F(OverflowGpu, PrefillLengthCheckCannotWrap) {
  SessionOptions o;
  o.n_ctx = 64;
  Session s(model(), o);
  const std::vector<int32_t> one = {1};
  s.prefill(one);
  // n_past + size wrapped to 0 for this size, and the tokens were then read far past the array.
  // The span is never dereferenced: the length is refused first.
  const std::span<const int32_t> lie(one.data(), std::numeric_limits<size_t>::max());
  expect_error([&] { s.prefill(lie); }, "does not fit the context: 1 used of 64");
  EXPECT_EQ(s.n_past(), 1u);
  expect_error([&] { s.prefill(std::vector<int32_t>(64, 1)); },
               "prompt of 64 tokens does not fit the context: 1 used of 64");
  EXPECT_NO_THROW(s.prefill(std::vector<int32_t>(63, 1)));
  EXPECT_EQ(s.n_past(), 64u);
}

TEST_F(OverflowGpu, NeedleLengthsAreBoundedBeforeBuildingPrompts) {
  const Tokenizer& tok = model().tokenizer();
  const uint32_t n_vocab = model().config().n_vocab;
  // A context of 2^32 - 1 tokens would be built (16 GiB) before any session refused it.
  expect_error([&] { needle_prompt(tok, n_vocab, kU32Max, 50, 1); },
               "needle: context length 4294967295 is out of range (1..16777216)");
  NeedleOptions o;
  o.depths = {50};
  o.specs = {ProfileSpec{"full", KvPolicyOptions{}}};
  o.contexts = {kU32Max};
  expect_error([&] { run_needle(model(), o); }, "needle: context length 4294967295 is out of range");
  // context + generated tokens was a 32-bit sum for the session's n_ctx.
  o.contexts = {64};
  o.extra_tokens = kU32Max - 3;
  expect_error([&] { run_needle(model(), o); }, "needle: extra tokens 4294967292 is out of range (0..16777216)");
  o.contexts = {64};
  o.extra_tokens = kMaxContext;
  expect_error([&] { run_needle(model(), o); }, "needle: context plus generated tokens");
}

TEST_F(OverflowGpu, AbsurdBufferSizeIsRefusedBeforeVulkan) {
  const uint64_t before = ctx().memory().current(), allocs = ctx().memory().allocations();
  expect_error([&] { Buffer b(ctx(), 1ull << 62, BufferKind::Device, "absurd"); },
               "out of device memory: buffer 'absurd' of 4611686018427387904 bytes is larger than the device's largest "
               "memory heap");
  expect_error([&] { Buffer b(ctx(), kU64Max, BufferKind::Staging, "absurd"); },
               "is larger than the device's largest memory heap");
  EXPECT_EQ(ctx().memory().current(), before);
  EXPECT_EQ(ctx().memory().allocations(), allocs);
}

TEST_F(OverflowGpu, RangeChecksOfCommandsDoNotWrap) {
  Buffer a(ctx(), 256, BufferKind::Device, "a"), b(ctx(), 256, BufferKind::Device, "b");
  const uint64_t align = ctx().info().min_storage_buffer_offset_alignment;
  const uint64_t off = (kU64Max / align) * align;  // aligned, and off + 8 wraps to a small number
  CommandStream cs(ctx());
  cs.begin();
  expect_error([&] { cs.copy(a, kU64Max - 3, b, 0, 8); }, "copy out of range");
  expect_error([&] { cs.copy(a, 0, b, kU64Max - 3, 8); }, "copy out of range");
  expect_error([&] { cs.fill(a, kU64Max - 3, 8, 0); }, "fill out of range");
  expect_error([&] { op_add(cs, k(), BufferRange(a, off, 64), b, b, 16, 16); }, "is outside buffer 'a'");
  cs.submit();  // nothing invalid was recorded
}

TEST_F(OverflowGpu, CApiSessionOptionsAreChecked) {
  // The C API hands its options to the same checks: a clear SNAPVK_INVALID_ARGUMENT.
  snapvk_device* d = nullptr;
  ASSERT_EQ(snapvk_device_create(nullptr, &d), SNAPVK_OK) << snapvk_last_error();
  snapvk_model* m = nullptr;
  ASSERT_EQ(snapvk_model_load(d, model_path("stories260K.gguf").c_str(), nullptr, &m), SNAPVK_OK)
      << snapvk_last_error();
  auto create = [&](const std::function<void(snapvk_session_options&)>& edit, const std::string& what) {
    snapvk_session_options o{};
    o.struct_size = sizeof o;
    o.n_ctx = 64;
    edit(o);
    snapvk_session* s = nullptr;
    EXPECT_EQ(snapvk_session_create(m, &o, &s), SNAPVK_INVALID_ARGUMENT) << what;
    EXPECT_EQ(s, nullptr);
    EXPECT_NE(std::string(snapvk_last_error()).find(what), std::string::npos) << snapvk_last_error();
  };
  create([](snapvk_session_options& o) { o.n_ctx = kU32Max; }, "n_ctx 4294967295 is out of range");
  create([](snapvk_session_options& o) { o.kv_policy_name = "snapkv", o.kv_budget = kU32Max; },
         "KV budget 4294967295 is too large (at most 16777216) (snapvk_session_options.kv_budget)");
  create([](snapvk_session_options& o) { o.kv_policy_name = "snapkv", o.kv_ratio = 0.5f, o.kv_window = kU32Max; },
         "KV window 4294967295 is too large (at most 16777216) (snapvk_session_options.kv_window)");
  snapvk_session_options o{};
  o.struct_size = sizeof o;
  o.n_ctx = 64;
  snapvk_session* s = nullptr;
  ASSERT_EQ(snapvk_session_create(m, &o, &s), SNAPVK_OK) << snapvk_last_error();
  const int32_t one = 1;
  ASSERT_EQ(snapvk_session_prefill_tokens(s, &one, 1), SNAPVK_OK) << snapvk_last_error();
  EXPECT_EQ(snapvk_session_prefill_tokens(s, &one, std::numeric_limits<size_t>::max()), SNAPVK_INVALID_ARGUMENT);
  EXPECT_NE(std::string(snapvk_last_error()).find("does not fit the context"), std::string::npos)
      << snapvk_last_error();
  snapvk_session_free(s);
  snapvk_model_free(m);
  snapvk_device_free(d);
}

}  // namespace
}  // namespace snapvk::test
