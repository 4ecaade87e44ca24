// GGUF reader and writer: the fixture models, writer round trips, and malformed files.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "host/gguf/gguf.h"
#include "host/gguf/gguf_writer.h"
#include "host/gguf/quant.h"
#include "runtime/error.h"
#include "tests/test_util.h"

namespace snapvk {
namespace {

namespace fs = std::filesystem;

// Runs fn and expects a snapvk::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected snapvk::Error containing '" << *parts.begin() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message spans lines: " << msg;
  }
}

std::string fixture(const std::string& name) {
  const std::string path = test::model_path(name);
  EXPECT_TRUE(fs::exists(path)) << path << " missing (see shared/models/PROVENANCE.md)";
  return path;
}

// A per-test scratch directory under the system temp dir, removed afterwards.
class GgufFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = fs::temp_directory_path() / ("snapvk_gguf_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string write_bytes(const std::string& name, const std::string& bytes) const {
    std::ofstream(path(name), std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    return path(name);
  }
  static std::string read_bytes(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  fs::path dir_;
};

// Builds GGUF bytes by hand, for files the writer would refuse to make.
struct Bytes {
  std::string b;
  Bytes& u8(uint8_t v) {
    b.push_back(char(v));
    return *this;
  }
  Bytes& u32(uint32_t v) {
    b.append(reinterpret_cast<const char*>(&v), 4);
    return *this;
  }
  Bytes& u64(uint64_t v) {
    b.append(reinterpret_cast<const char*>(&v), 8);
    return *this;
  }
  Bytes& str(const std::string& s) {
    u64(s.size());
    b += s;
    return *this;
  }
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b += "GGUF";
    return u32(version).u64(n_tensors).u64(n_kv);
  }
  // A tensor info: name, dims, type, offset.
  Bytes& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name).u32(uint32_t(ne.size()));
    for (uint64_t d : ne) u64(d);
    return u32(type).u64(offset);
  }
  Bytes& pad(size_t align = 32) {
    while (b.size() % align) b.push_back('\0');
    return *this;
  }
};

// ---- fixture models ----------------------------------------------------------------------------

TEST(GgufRead, Stories260K) {
  const GgufFile f = GgufFile::open(fixture("stories260K.gguf"));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.file_size(), 1185376u);
  EXPECT_EQ(f.metadata().size(), 19u);
  EXPECT_EQ(f.tensors().size(), 48u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset(), 14176u);

  EXPECT_EQ(f.require_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_uint("llama.embedding_length", 0), 64u);
  EXPECT_EQ(f.get_uint("llama.block_count", 0), 5u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count", 0), 8u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count_kv", 0), 4u);
  EXPECT_EQ(f.get_uint("llama.feed_forward_length", 0), 172u);
  EXPECT_EQ(f.get_int("llama.context_length", 0), 2048);
  EXPECT_EQ(f.get_uint("llama.rope.dimension_count", 0), 8u);
  EXPECT_EQ(f.require_float("llama.attention.layer_norm_rms_epsilon"), 9.999999747378752e-06f);
  EXPECT_EQ(f.get_float("llama.rope.freq_base", 10000.f), 10000.f);  // absent here
  EXPECT_EQ(f.get_float("llama.block_count", 0.f), 5.f);             // ints convert to float
  EXPECT_EQ(f.get_uint("tokenizer.ggml.padding_token_id", 0), 4294967295u);
  EXPECT_EQ(f.get_int("tokenizer.ggml.padding_token_id", 0), 4294967295);
  EXPECT_TRUE(f.get_bool("tokenizer.ggml.add_bos_token", true));  // absent: default
  EXPECT_EQ(f.find("llama.block_count")->type, GgufType::U32);
  EXPECT_EQ(f.find("tokenizer.ggml.scores")->type_string(), "array[f32]");

  const std::vector<std::string> tokens = f.require_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 512u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[3], "<0x00>");
  EXPECT_EQ(tokens[511], "\xe2\x80\x8a");  // U+200A
  const std::vector<float> scores = f.get_float_array("tokenizer.ggml.scores");
  ASSERT_EQ(scores.size(), 512u);
  EXPECT_EQ(scores[0], 0.f);
  EXPECT_EQ(scores[511], -252.f);
  const std::vector<int32_t> types = f.get_int_array("tokenizer.ggml.token_type");
  ASSERT_EQ(types.size(), 512u);
  EXPECT_EQ((std::vector<int32_t>(types.begin(), types.begin() + 4)), (std::vector<int32_t>{2, 3, 3, 6}));
  EXPECT_TRUE(f.get_string_array("tokenizer.ggml.merges").empty());

  const GgufTensor& emb = f.require_tensor("token_embd.weight", {64, 512});
  EXPECT_EQ(emb.type, GgmlType::F32);
  EXPECT_EQ(emb.n_dims, 2u);
  EXPECT_EQ(emb.offset, 0u);
  EXPECT_EQ(emb.nbytes, 131072u);
  EXPECT_EQ(emb.data, f.tensors()[0].data);
  float first[4];
  std::memcpy(first, emb.data, sizeof(first));
  EXPECT_NEAR(first[0], -0.294749f, 1e-6f);
  EXPECT_NEAR(first[1], 0.561896f, 1e-6f);
  EXPECT_NEAR(first[2], 0.175423f, 1e-6f);
  EXPECT_NEAR(first[3], 0.340574f, 1e-6f);
  const GgufTensor& down = f.require_tensor("blk.0.ffn_down.weight", {172, 64});
  EXPECT_EQ(down.offset, 355840u);
  EXPECT_EQ(down.shape_string(), "[172, 64]");
  float d0;
  std::memcpy(&d0, down.data, 4);
  EXPECT_NEAR(d0, 0.134984f, 1e-6f);
  EXPECT_EQ(f.require_tensor("output_norm.weight", {64}).nbytes, 256u);
  EXPECT_EQ(f.find_tensor("blk.5.attn_q.weight"), nullptr);
  uint64_t total = 0;
  for (const GgufTensor& t : f.tensors()) total += t.n_elements();
  EXPECT_EQ(total, 292800u);

  expect_error(
      [&] {
        f.require_tensor("blk.0.attn_k.weight", {64, 64});
      },
      {"stories260K.gguf", "tensor 'blk.0.attn_k.weight'", "[64, 32]", "expected [64, 64]"});
  expect_error([&] { f.require_tensor("nope.weight", {1}); }, {"missing tensor 'nope.weight'"});
  expect_error([&] { f.require_uint("llama.nope"); }, {"stories260K.gguf", "missing key 'llama.nope'"});
  expect_error([&] { f.get_string("llama.block_count", ""); },
               {"key 'llama.block_count' has type u32, expected string"});
  expect_error([&] { f.get_uint("general.architecture", 0); },
               {"key 'general.architecture' has type string, expected unsigned integer"});
  expect_error([&] { f.get_float_array("tokenizer.ggml.tokens"); },
               {"has type array[string], expected array of numbers"});
  expect_error([&] { f.get_string_array("tokenizer.ggml.scores"); }, {"has type array[f32], expected array[string]"});

  const std::string d = f.describe();
  for (const char* part : {"GGUF v3", "19 metadata keys", "48 tensors", "architecture 'llama'"})
    EXPECT_NE(d.find(part), std::string::npos) << d;
}

TEST(GgufRead, VocabLlamaSpm) {
  const GgufFile f = GgufFile::open(fixture("ggml-vocab-llama-spm.gguf"));
  EXPECT_EQ(f.metadata().size(), 22u);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.require_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(f.get_uint("llama.vocab_size", 0), 32000u);
  EXPECT_TRUE(f.require_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(f.get_bool("tokenizer.ggml.add_eos_token", true));
  const auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 32000u);
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(f.get_float_array("tokenizer.ggml.scores").size(), 32000u);
  EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type")[3], 6);
}

TEST(GgufRead, VocabGpt2LoadsFast) {
  // 50257 tokens and 50000 merges; the data section (no tensors) starts past the file end.
  const auto start = std::chrono::steady_clock::now();
  const GgufFile f = GgufFile::open(fixture("ggml-vocab-gpt-2.gguf"));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(secs, 5.0);  // typically a few ms; a per-element allocation scheme would show here
  EXPECT_EQ(f.metadata().size(), 16u);
  EXPECT_EQ(f.require_string("general.architecture"), "gpt2");
  EXPECT_EQ(f.require_string("tokenizer.ggml.pre"), "gpt-2");
  const auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 50257u);
  EXPECT_EQ(tokens[0], "!");
  const auto merges = f.require_string_array("tokenizer.ggml.merges");
  ASSERT_EQ(merges.size(), 50000u);
  EXPECT_EQ(merges[0], "\xc4\xa0 t");  // "Ġ t"
  EXPECT_EQ(merges[6], "\xc4\xa0t he");
  EXPECT_EQ(f.get_uint("tokenizer.ggml.bos_token_id", 0), 50256u);
  EXPECT_EQ(f.data_offset(), 1766816u);
  EXPECT_GT(f.data_offset(), f.file_size());
}

TEST(GgufRead, LlamaTinyRandom) {
  const GgufFile f = GgufFile::open(fixture("random/llama-2-tiny-random.gguf"));
  EXPECT_EQ(f.metadata().size(), 18u);
  ASSERT_EQ(f.tensors().size(), 12u);
  EXPECT_EQ(f.data_offset(), 724416u);
  EXPECT_EQ(f.require_string("general.name"), "LLaMA v2");
  EXPECT_EQ(f.get_uint("llama.embedding_length", 0), 8u);
  const GgufTensor& emb = f.require_tensor("token_embd.weight", {8, 32000});
  EXPECT_EQ(emb.type, GgmlType::F16);
  EXPECT_EQ(emb.nbytes, 512000u);
  const GgufTensor& out = f.require_tensor("output.weight", {8, 32000});
  EXPECT_EQ(out.offset, 514144u);
  EXPECT_EQ(f.data_offset() + out.offset + out.nbytes, f.file_size());  // ends exactly at EOF
  const GgufTensor& norm = f.require_tensor("blk.0.attn_norm.weight", {8});
  std::vector<float> v(8);
  dequantize_row(norm.type, norm.data, v.data(), 8);
  EXPECT_EQ(v, std::vector<float>(8, 1.0f));
  std::vector<float> row(8);
  dequantize_row(emb.type, emb.data + 5 * 16, row.data(), 8);  // row 5 decodes to finite values
  for (float x : row) EXPECT_TRUE(std::isfinite(x));
}

TEST(GgufRead, MoveKeepsMappingAlive) {
  GgufFile a = GgufFile::open(fixture("stories260K.gguf"));
  const uint8_t* data = a.tensors()[1].data;
  GgufFile b = std::move(a);
  EXPECT_EQ(b.tensors()[1].data, data);
  GgufFile c = GgufFile::open(fixture("random/llama-2-tiny-random.gguf"));
  c = std::move(b);  // unmaps c's old file
  float w;
  std::memcpy(&w, c.require_tensor("output_norm.weight", {64}).data, 4);
  EXPECT_NEAR(w, 2.45831f, 1e-5f);
}

// ---- writer round trips ------------------------------------------------------------------------

TEST_F(GgufFiles, WriterRoundTripsEveryValueType) {
  GgufWriter w;
  w.set_string("general.architecture", "test");
  w.set_uint8("t.u8", 255);
  w.set_int8("t.i8", -128);
  w.set_uint16("t.u16", 65535);
  w.set_int16("t.i16", -32768);
  w.set_uint32("t.u32", 4294967295u);
  w.set_int32("t.i32", -2147483647 - 1);
  w.set_uint64("t.u64", ~uint64_t{0});
  w.set_int64("t.i64", INT64_MIN);
  w.set_float32("t.f32", 3.14159274f);
  w.set_float64("t.f64", 2.718281828459045);
  w.set_bool("t.true", true);
  w.set_bool("t.false", false);
  w.set_string("t.str", std::string("h\xc3\xa9llo\0x", 8));  // UTF-8 and an embedded NUL
  w.set_string("t.empty", "");
  w.set_string_array("t.strs", {"a", "", "\xe2\x96\x81the"});
  w.set_float_array("t.floats", {1.5f, -0.0f, 1e-30f});
  w.set_int32_array("t.ints", {-1, 0, 2147483647});
  w.set_int32_array("t.noints", {});
  GgufArray u16s{GgufType::U16, {1, 0, 2, 0}, {}, {}};  // [1, 2] as little-endian u16
  w.set_value("t.u16s", GgufValue::make_array(u16s));
  w.set_uint32("t.u8", 7);  // re-setting replaces the value and type, keeps the position
  const std::string p = path("values.gguf");
  w.write(p);
  EXPECT_FALSE(fs::exists(p + ".tmp"));

  const GgufFile f = GgufFile::open(p);
  EXPECT_EQ(f.version(), 3u);
  ASSERT_EQ(f.metadata().size(), 20u);
  EXPECT_EQ(f.metadata()[1].key, "t.u8");
  EXPECT_EQ(f.find("t.u8")->type, GgufType::U32);
  EXPECT_EQ(f.get_uint("t.u8", 0), 7u);
  EXPECT_EQ(f.find("t.i8")->type, GgufType::I8);
  EXPECT_EQ(f.get_int("t.i8", 0), -128);
  EXPECT_EQ(f.find("t.u16")->type, GgufType::U16);
  EXPECT_EQ(f.get_uint("t.u16", 0), 65535u);
  EXPECT_EQ(f.get_int("t.i16", 0), -32768);
  EXPECT_EQ(f.get_uint("t.u32", 0), 4294967295u);
  EXPECT_EQ(f.get_int("t.i32", 0), INT32_MIN);
  EXPECT_EQ(f.get_uint("t.u64", 0), ~uint64_t{0});
  EXPECT_EQ(f.get_int("t.i64", 0), INT64_MIN);
  EXPECT_EQ(f.find("t.f32")->type, GgufType::F32);
  EXPECT_EQ(f.get_float("t.f32", 0), 3.14159274f);
  EXPECT_EQ(f.find("t.f64")->type, GgufType::F64);
  EXPECT_EQ(std::get<double>(f.find("t.f64")->data), 2.718281828459045);
  EXPECT_TRUE(f.get_bool("t.true", false));
  EXPECT_FALSE(f.get_bool("t.false", true));
  EXPECT_EQ(f.get_string("t.str", ""), std::string("h\xc3\xa9llo\0x", 8));
  EXPECT_EQ(f.require_string("t.empty"), "");
  EXPECT_EQ(f.get_string_array("t.strs"), (std::vector<std::string>{"a", "", "\xe2\x96\x81the"}));
  const std::vector<float> fl = f.get_float_array("t.floats");
  ASSERT_EQ(fl.size(), 3u);
  EXPECT_EQ(fl[0], 1.5f);
  EXPECT_TRUE(std::signbit(fl[1]));
  EXPECT_EQ(fl[2], 1e-30f);
  EXPECT_EQ(f.get_int_array("t.ints"), (std::vector<int32_t>{-1, 0, 2147483647}));
  EXPECT_EQ(f.find("t.noints")->type_string(), "array[i32]");
  EXPECT_TRUE(f.require_int_array("t.noints").empty());
  EXPECT_EQ(f.find("t.u16s")->type_string(), "array[u16]");
  EXPECT_EQ(f.get_int_array("t.u16s"), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(f.get_float_array("t.u16s"), (std::vector<float>{1.f, 2.f}));

  // Range checks across widths and signedness.
  expect_error([&] { f.get_int("t.u64", 0); }, {"key 't.u64'", "out of range for int64"});
  expect_error([&] { f.get_uint("t.i8", 0); }, {"key 't.i8'", "-128", "non-negative"});
  expect_error([&] { f.get_bool("t.u16", false); }, {"has type u16, expected bool"});
  expect_error([&] { f.get_float("t.str", 0); }, {"has type string, expected number"});

  // Copying every value through set_value reproduces the metadata section byte for byte.
  GgufWriter copy;
  for (const GgufKv& kv : f.metadata()) copy.set_value(kv.key, kv.value);
  copy.write(path("copy.gguf"));
  EXPECT_EQ(read_bytes(path("copy.gguf")), read_bytes(p));
}

// GGUF allows arrays of arrays (llama.cpp does not read them, so the writer refuses them).
TEST_F(GgufFiles, ReadsNestedArrays) {
  Bytes b = Bytes().header(0, 1).str("nested").u32(9).u32(9).u64(3);
  b.u32(2).u64(2).u8(1).u8(0).u8(2).u8(0);  // array[u16] {1, 2}
  b.u32(8).u64(2).str("x").str("yz");       // array[string] {"x", "yz"}
  b.u32(9).u64(1).u32(7).u64(1).u8(1);      // array[array[bool]] {{true}}
  const GgufFile f = GgufFile::open(write_bytes("nested.gguf", b.b));
  const GgufValue* v = f.find("nested");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->type_string(), "array[array[u16]]");
  const GgufArray* n = v->array();
  ASSERT_EQ(n->size(), 3u);
  EXPECT_EQ(gguf_as_int_array(n->arrays[0], "nested[0]"), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(gguf_as_string_array(n->arrays[1], "nested[1]"), (std::vector<std::string>{"x", "yz"}));
  EXPECT_EQ(n->arrays[2].type_string(), "array[array[bool]]");
  expect_error([&] { f.get_string_array("nested"); }, {"key 'nested' has type array[array[u16]]"});

  GgufWriter w;
  expect_error([&] { w.set_value("nested", *v); }, {"arrays of arrays"});
  expect_error([&] { w.set_uint32("", 1); }, {"empty metadata key"});
}

TEST_F(GgufFiles, WriterRoundTripsTensorsOfEachSupportedType) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.f, 0.5f);
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  struct Made {
    std::string name;
    GgmlType type;
    std::vector<uint64_t> ne;
    std::vector<uint8_t> bytes;
  };
  std::vector<Made> made;
  const GgmlType types[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,   GgmlType::Q4_0,
                            GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_1, GgmlType::Q5_0,   GgmlType::Q5_1,
                            GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q5_K, GgmlType::IQ4_NL, GgmlType::IQ4_XS};
  for (GgmlType t : types) {
    const std::vector<std::vector<uint64_t>> shapes = {{256}, {512, 3}, {256, 1, 3}, {256, 2, 1, 3}};
    for (size_t s = 0; s < shapes.size(); ++s) {
      uint64_t n = 1;
      for (uint64_t d : shapes[s]) n *= d;
      std::vector<float> x(n);
      for (float& v : x) v = dist(rng);
      std::vector<uint8_t> q(row_bytes(t, n));
      quantize_row(t, x.data(), q.data(), int64_t(n));
      const std::string name = std::string("t.") + type_name(t) + "." + std::to_string(s);
      w.add_tensor(name, t, shapes[s], q.data(), q.size());
      made.push_back({name, t, shapes[s], q});
    }
  }
  w.write(path("tensors.gguf"));

  const GgufFile f = GgufFile::open(path("tensors.gguf"));
  ASSERT_EQ(f.tensors().size(), made.size());
  for (size_t i = 0; i < made.size(); ++i) {
    const GgufTensor& t = f.tensors()[i];
    EXPECT_EQ(t.name, made[i].name);
    EXPECT_EQ(t.type, made[i].type);
    ASSERT_EQ(t.n_dims, made[i].ne.size());
    for (size_t j = 0; j < 4; ++j) EXPECT_EQ(t.ne[j], j < made[i].ne.size() ? made[i].ne[j] : 1u);
    EXPECT_EQ(t.offset % 32, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 32, 0u);  // mmap base is page aligned
    ASSERT_EQ(t.nbytes, made[i].bytes.size());
    EXPECT_EQ(std::memcmp(t.data, made[i].bytes.data(), t.nbytes), 0) << t.name;
  }
}

// Copying a llama.cpp-made file key by key and tensor by tensor reproduces it byte for byte:
// the writer's layout (order, offsets, padding) is the standard one.
TEST_F(GgufFiles, RewritingFixtureModelsIsByteIdentical) {
  for (const char* name : {"stories260K.gguf", "random/llama-2-tiny-random.gguf"}) {
    const GgufFile src = GgufFile::open(fixture(name));
    GgufWriter w;
    for (const GgufKv& kv : src.metadata()) w.set_value(kv.key, kv.value);
    for (const GgufTensor& t : src.tensors())
      w.add_tensor(t.name, t.type, std::vector<uint64_t>(t.ne, t.ne + t.n_dims), t.data, t.nbytes);
    w.write(path("copy.gguf"));
    EXPECT_TRUE(read_bytes(path("copy.gguf")) == read_bytes(src.path())) << name;
  }
}

TEST_F(GgufFiles, WriterHonoursGeneralAlignment) {
  GgufWriter w;
  w.set_uint32("general.alignment", 256);
  const float a[3] = {1, 2, 3}, b[5] = {4, 5, 6, 7, 8};
  w.add_tensor("a", GgmlType::F32, {3}, a, sizeof(a));
  w.add_tensor("b", GgmlType::F32, {5}, b, sizeof(b));
  w.write(path("aligned.gguf"));
  const GgufFile f = GgufFile::open(path("aligned.gguf"));
  EXPECT_EQ(f.alignment(), 256u);
  EXPECT_EQ(f.data_offset() % 256, 0u);
  EXPECT_EQ(f.tensors()[1].offset, 256u);
  float got;
  std::memcpy(&got, f.tensors()[1].data + 16, 4);
  EXPECT_EQ(got, 8.f);
}

TEST_F(GgufFiles, WriterRejectsBadTensors) {
  GgufWriter w;
  const std::vector<uint8_t> buf(4096);
  expect_error([&] { w.add_tensor("x", GgmlType::F32, {4}, buf.data(), 15); }, {"tensor 'x'", "15 bytes", "takes 16"});
  expect_error([&] { w.add_tensor("x", GgmlType::Q4_K, {100}, buf.data(), 144); },
               {"not a multiple of the q4_K block size 256"});
  expect_error([&] { w.add_tensor("x", GgmlType::F32, {1, 1, 1, 1, 1}, buf.data(), 4); }, {"5 dimensions"});
  expect_error([&] { w.add_tensor("x", GgmlType::F32, {4, 0}, buf.data(), 0); }, {"dimension 1 is 0"});
  expect_error([&] { w.add_tensor(std::string(64, 'n'), GgmlType::F32, {1}, buf.data(), 4); }, {"64 bytes (max 63)"});
  expect_error([&] { w.add_tensor("", GgmlType::F32, {1}, buf.data(), 4); }, {"empty tensor name"});
  expect_error([&] { w.add_tensor("x", static_cast<GgmlType>(5), {1}, buf.data(), 4); }, {"unknown type id 5"});
  w.add_tensor("x", GgmlType::F32, {1}, buf.data(), 4);
  expect_error([&] { w.add_tensor("x", GgmlType::F32, {1}, buf.data(), 4); }, {"duplicate"});
  GgufArray bad{GgufType::U32, {1, 2, 3}, {}, {}};  // 3 bytes is not a whole u32
  expect_error([&] { w.set_value("k", GgufValue::make_array(bad)); }, {"key 'k'", "3 bytes"});
  expect_error([&] { GgufValue::make_uint(GgufType::U8, 256); }, {"make_uint"});
  w.set_uint32("general.alignment", 48);
  expect_error([&] { w.write(path("never.gguf")); }, {"general.alignment 48"});
  w.set_uint64("general.alignment", 64);  // llama.cpp only reads a u32 alignment
  expect_error([&] { w.write(path("never.gguf")); }, {"general.alignment has type u64, expected u32"});
  EXPECT_FALSE(fs::exists(path("never.gguf")));
}

// ---- malformed input ---------------------------------------------------------------------------

TEST_F(GgufFiles, BadFilesGiveClearErrors) {
  const auto open = [](const std::string& p) { return [p] { GgufFile::open(p); }; };
  const uint64_t huge = uint64_t{1} << 60;

  expect_error(open(path("missing.gguf")), {"missing.gguf", "cannot open", "No such file"});
  expect_error(open(dir_.string()), {"not a regular file"});
  expect_error(open(write_bytes("empty.gguf", "")), {"empty.gguf", "not a GGUF file (empty)"});
  expect_error(open(write_bytes("elf.gguf",
                                "\x7f"
                                "ELF\x02\x01\x01\x00 and more")),
               {"elf.gguf", "not a GGUF file", "7f 45 4c 46"});
  expect_error(open(write_bytes("short.gguf", Bytes().header(0, 0).b.substr(0, 10))),
               {"short.gguf", "truncated header (tensor count)"});
  expect_error(open(write_bytes("v1.gguf", Bytes().header(0, 0, 1).b)), {"GGUF version 1 is not supported"});
  expect_error(open(write_bytes("v4.gguf", Bytes().header(0, 0, 4).b)), {"unsupported GGUF version 4"});
  expect_error(open(write_bytes("be.gguf", Bytes().header(0, 0, 0x03000000).b)), {"big-endian"});

  // Counts and lengths far beyond the file size are refused before anything is allocated.
  expect_error(open(write_bytes("kv_count.gguf", Bytes().header(0, huge).b)), {"metadata count 1152921504606846976"});
  expect_error(open(write_bytes("t_count.gguf", Bytes().header(huge, 0).b)), {"tensor count 1152921504606846976"});
  expect_error(open(write_bytes("key_len.gguf", Bytes().header(0, 1).u64(huge).b + std::string(16, 'k'))),
               {"key of metadata entry 0", "string length 1152921504606846976", "runs past end of file"});
  expect_error(open(write_bytes("str_len.gguf", Bytes().header(0, 1).str("general.name").u32(8).u64(huge).b)),
               {"key 'general.name'", "string length 1152921504606846976", "runs past end of file"});
  expect_error(
      open(write_bytes("arr_count.gguf", Bytes().header(0, 1).str("tokenizer.ggml.tokens").u32(9).u32(8).u64(huge).b)),
      {"key 'tokenizer.ggml.tokens'", "array of 1152921504606846976 string elements", "runs past end of file"});
  expect_error(open(write_bytes("arr_u8.gguf", Bytes().header(0, 1).str("a").u32(9).u32(0).u64(100).u8(1).b)),
               {"array of 100 u8 elements"});

  // Malformed metadata.
  expect_error(open(write_bytes("vtype.gguf", Bytes().header(0, 1).str("k").u32(13).u32(0).b)),
               {"key 'k' has unknown value type 13"});
  expect_error(open(write_bytes("bool.gguf", Bytes().header(0, 1).str("k").u32(7).u8(2).b)), {"bool value 2"});
  expect_error(open(write_bytes("dup.gguf", Bytes().header(0, 2).str("k").u32(0).u8(1).str("k").u32(0).u8(2).b)),
               {"duplicate key 'k'"});
  Bytes deep = Bytes().header(0, 1).str("deep").u32(9);
  for (int i = 0; i < 20; ++i) deep.u32(9).u64(1);
  expect_error(open(write_bytes("deep.gguf", deep.b)), {"nested deeper than 8"});
  expect_error(open(write_bytes("align33.gguf", Bytes().header(0, 1).str("general.alignment").u32(4).u32(33).b)),
               {"general.alignment 33 is not a power of two"});
  expect_error(open(write_bytes("align0.gguf", Bytes().header(0, 1).str("general.alignment").u32(4).u32(0).b)),
               {"general.alignment 0 is not a power of two"});
  expect_error(open(write_bytes("alignstr.gguf", Bytes().header(0, 1).str("general.alignment").u32(8).str("32").b)),
               {"general.alignment", "has type string"});

  // Malformed tensor infos. Each file has room for the data, so only the named problem fails.
  const auto tensor_file = [&](const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    Bytes b = Bytes().header(1, 0).tensor("w", ne, type, offset).pad();
    b.b += std::string(4096, '\0');
    return open(write_bytes(name, b.b));
  };
  expect_error(tensor_file("type99.gguf", {4}, 99, 0), {"type99.gguf", "tensor 'w' has unknown type id 99"});
  expect_error(tensor_file("type4.gguf", {4}, 4, 0), {"tensor 'w' has unknown type id 4"});
  expect_error(tensor_file("dims5.gguf", {1, 1, 1, 1, 1}, 0, 0), {"tensor 'w' has 5 dimensions (max 4)"});
  expect_error(tensor_file("zero.gguf", {4, 0}, 0, 0), {"tensor 'w' has a zero dimension"});
  expect_error(tensor_file("overflow.gguf", {uint64_t{1} << 32, uint64_t{1} << 32}, 0, 0),
               {"overflows the element count"});
  expect_error(tensor_file("bytes_overflow.gguf", {uint64_t{1} << 62}, 0, 0), {"overflows the byte size"});
  expect_error(tensor_file("block.gguf", {100}, 12, 0), {"row length 100", "q4_K block size 256"});
  expect_error(tensor_file("misaligned.gguf", {4}, 0, 16), {"offset 16 is not a multiple of the alignment 32"});
  expect_error(tensor_file("past_end.gguf", {2048}, 0, 0),
               {"past_end.gguf", "tensor 'w' data [offset 0, 8192 bytes] extends past end of file"});
  expect_error(tensor_file("far_offset.gguf", {4}, 0, uint64_t{1} << 63), {"extends past end of file"});
  expect_error(tensor_file("max_offset.gguf", {4}, 0, ~uint64_t{31}), {"extends past end of file"});
  expect_error(
      open(write_bytes("dup_t.gguf", Bytes().header(2, 0).tensor("w", {4}, 0, 0).tensor("w", {4}, 0, 32).pad().b +
                                         std::string(64, '\0'))),
      {"duplicate tensor name 'w'"});
}

TEST_F(GgufFiles, TruncatedWriterFilesFailCleanly) {
  GgufWriter w;
  w.set_string("general.name", "truncate me");
  w.set_string_array("tokenizer.ggml.tokens", {"a", "bb", "ccc"});
  w.set_float_array("tokenizer.ggml.scores", {1, 2, 3});
  const std::vector<float> data(8, 0.5f);  // 32 bytes: the file ends exactly at the data end
  w.add_tensor("w", GgmlType::F32, {8}, data.data(), 32);
  w.write(path("full.gguf"));
  const std::string full = read_bytes(path("full.gguf"));
  GgufFile::open(path("full.gguf"));  // the untruncated file is fine
  for (size_t len = 0; len < full.size(); ++len) {
    const std::string p = write_bytes("cut.gguf", full.substr(0, len));
    EXPECT_THROW(GgufFile::open(p), Error) << "length " << len;
  }
  // A cut in the middle of a string value names what was being read.
  GgufWriter one;
  one.set_string("general.name", "truncate me");
  one.write(path("one.gguf"));
  const std::string one_bytes = read_bytes(path("one.gguf"));
  const size_t at = one_bytes.find("truncate me");
  expect_error([&] { GgufFile::open(write_bytes("cut2.gguf", one_bytes.substr(0, at + 4))); },
               {"cut2.gguf", "key 'general.name'", "string length 11", "runs past end of file"});
  expect_error([&] { GgufFile::open(write_bytes("cut3.gguf", full.substr(0, full.size() - 1))); },
               {"tensor 'w' data [offset 0, 32 bytes] extends past end of file"});
}

TEST_F(GgufFiles, RandomCorruptionNeverCrashes) {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_uint32("llama.block_count", 1);
  w.set_string_array("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "hello"});
  w.set_int32_array("tokenizer.ggml.token_type", {2, 3, 3, 1});
  std::vector<uint8_t> q(row_bytes(GgmlType::Q4_K, 256), 0x11);
  w.add_tensor("blk.0.ffn_up.weight", GgmlType::Q4_K, {256}, q.data(), q.size());
  w.write(path("base.gguf"));
  const std::string base = read_bytes(path("base.gguf"));
  std::mt19937 rng(99);
  int opened = 0, rejected = 0;
  for (int iter = 0; iter < 1500; ++iter) {
    std::string b = base;
    const int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      const size_t pos = rng() % 200;  // the header region, where the structure lives
      b[pos] = (rng() % 3 == 0) ? char(0xff) : char(rng());
    }
    const std::string p = write_bytes("fuzz.gguf", b);
    try {
      const GgufFile f = GgufFile::open(p);
      unsigned sum = 0;
      for (const GgufTensor& t : f.tensors()) {  // whatever opened must lie inside the file
        ASSERT_LE(f.data_offset() + t.offset + t.nbytes, f.file_size());
        for (uint64_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
      }
      ++opened;
      (void)sum;
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_EQ(opened + rejected, 1500);
}

}  // namespace
}  // namespace snapvk
