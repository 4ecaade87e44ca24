// Bad input through the CLI: each case runs the built snapvk binary as a subprocess and expects a
// clean failure: a non-zero exit (not a signal), within a time limit, with exactly one line on
// stderr, "snapvk: error: ...", that names the problem.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "host/gguf/gguf.h"
#include "host/gguf/gguf_writer.h"
#include "host/report/synth.h"
#include "runtime/error.h"
#include "tests/cli_runner.h"
#include "tests/test_util.h"
#include "tools/cli.h"

extern char** environ;

namespace snapvk::test {
namespace {

namespace fs = std::filesystem;

class BadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("snapvk-badinput-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    SynthShape s;
    s.n_embd = 64, s.n_layer = 2, s.n_head = 4, s.n_head_kv = 2, s.n_ff = 128, s.n_vocab = 300, s.n_ctx = 256;
    write_synth_gguf(s, file("good.gguf"));
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  static std::string file(const std::string& name) { return (dir_ / name).string(); }

  static std::string write_text(const std::string& name, const std::string& text) {
    std::ofstream(file(name), std::ios::binary) << text;
    return file(name);
  }

  // good.gguf copied to `name` with metadata and tensors changed by the callbacks.
  using KvEdit = std::function<void(GgufWriter&)>;
  using TensorEdit = std::function<bool(GgufWriter&, const GgufTensor&)>;  // true: handled
  static std::string variant(const std::string& name, const KvEdit& kv, const TensorEdit& tensor = nullptr) {
    GgufFile src = GgufFile::open(file("good.gguf"));
    GgufWriter w;
    for (const GgufKv& e : src.metadata()) w.set_value(e.key, e.value);
    if (kv) kv(w);
    for (const GgufTensor& t : src.tensors()) {
      if (tensor && tensor(w, t)) continue;
      w.add_tensor(t.name, t.type, std::vector<uint64_t>(t.ne, t.ne + t.n_dims), t.data, t.nbytes);
    }
    w.write(file(name));
    return file(name);
  }

  static CliResult run(const std::vector<std::string>& args, int timeout_s = 60) { return run_cli(args, timeout_s); }

  // The whole contract of a failure; `what` must appear in the error line.
  static void expect_error(const std::vector<std::string>& args, const std::string& what) {
    std::string cmd = "snapvk";
    for (const auto& a : args) cmd += " " + (a.size() > 60 ? a.substr(0, 57) + "..." : a);
    SCOPED_TRACE(cmd);
    const CliResult r = run(args);
    ASSERT_FALSE(r.timed_out) << "did not finish in time";
    ASSERT_TRUE(r.exited) << "killed by signal " << r.signal << " (" << strsignal(r.signal) << "); stderr:\n" << r.err;
    EXPECT_NE(r.code, 0) << "exit status 0; stderr:\n" << r.err;
    std::vector<std::string> lines;
    std::istringstream ss(r.err);
    for (std::string line; std::getline(ss, line);)
      if (!line.empty()) lines.push_back(line);
    ASSERT_EQ(lines.size(), 1u) << "stderr:\n" << r.err;
    EXPECT_EQ(lines[0].rfind("snapvk: error: ", 0), 0u) << lines[0];
    EXPECT_NE(lines[0].find(what), std::string::npos) << "want '" << what << "' in: " << lines[0];
  }

  static void expect_model_error(const std::string& model, const std::string& what) {
    expect_error({"run", "-m", model, "-p", "Once upon a time", "-n", "4"}, what);
  }

  static fs::path dir_;
};

fs::path BadInput::dir_;

TEST_F(BadInput, TheGoodModelRuns) {  // the baseline the other cases break
  const CliResult r = run({"run", "-m", file("good.gguf"), "-p", "Once upon a time", "-n", "4", "--temp", "0"});
  EXPECT_TRUE(r.exited && r.code == 0) << r.err;
  EXPECT_EQ(r.out.rfind("Once upon a time", 0), 0u) << r.out;
}

TEST_F(BadInput, MissingModelFile) { expect_model_error(file("nope.gguf"), "nope.gguf: cannot open: No such file"); }

TEST_F(BadInput, ModelIsADirectory) { expect_model_error(dir_.string(), "not a regular file"); }

TEST_F(BadInput, TextFileIsNotGguf) {
  expect_model_error(write_text("notes.txt", "hello, this is not a model\n"), "not a GGUF file");
}

TEST_F(BadInput, EmptyFile) { expect_model_error(write_text("empty.gguf", ""), "not a GGUF file (empty)"); }

TEST_F(BadInput, TruncatedGguf) {
  const std::string all = slurp(model_path("stories260K.gguf"));
  ASSERT_GT(all.size(), 100000u);
  expect_model_error(write_text("trunc-header.gguf", all.substr(0, 2000)), "runs past end of file (size 2000)");
  expect_model_error(write_text("trunc-data.gguf", all.substr(0, all.size() / 2)), "extends past end of file");
}

TEST_F(BadInput, TensorPointsPastTheEnd) {
  // Rewrite the data offset of the last tensor's info to lie beyond the file (still aligned).
  std::string bytes = slurp(file("good.gguf"));
  GgufFile f = GgufFile::open(file("good.gguf"));
  const GgufTensor& last = f.tensors().back();
  const size_t name_at = bytes.find(last.name);
  ASSERT_NE(name_at, std::string::npos);
  const size_t offset_at = name_at + last.name.size() + 4 + 8 * last.n_dims + 4;
  uint64_t old = 0;
  std::memcpy(&old, bytes.data() + offset_at, 8);
  ASSERT_EQ(old, last.offset);
  const uint64_t past = (f.file_size() + 4096) / 32 * 32;
  std::memcpy(bytes.data() + offset_at, &past, 8);
  expect_model_error(write_text("past-end.gguf", bytes), "'" + last.name + "' data [offset " + std::to_string(past));
}

// d256.gguf (dim 256: one K-quant super-block per row) with blk.0.attn_q.weight stored as `type`
// (zero bytes) and written last, under `name`.
std::string with_attn_q_as(const fs::path& dir, const std::string& name, GgmlType type) {
  SynthShape s;
  s.n_embd = 256, s.n_layer = 1, s.n_head = 4, s.n_head_kv = 4, s.n_ff = 256, s.n_vocab = 300, s.n_ctx = 64;
  const std::string base = (dir / "d256.gguf").string();
  if (!fs::exists(base)) write_synth_gguf(s, base);
  GgufFile src = GgufFile::open(base);
  GgufWriter w;
  for (const GgufKv& e : src.metadata()) w.set_value(e.key, e.value);
  for (const GgufTensor& t : src.tensors())
    if (t.name != "blk.0.attn_q.weight")
      w.add_tensor(t.name, t.type, std::vector<uint64_t>(t.ne, t.ne + t.n_dims), t.data, t.nbytes);
  const std::vector<uint8_t> bytes(row_bytes(type, 256) * 256, 0);
  w.add_tensor("blk.0.attn_q.weight", type, {256, 256}, bytes.data(), bytes.size());
  const std::string out = (dir / name).string();
  w.write(out);
  return out;
}

// Types ggml has and snapvk does not run are refused by name, with the supported list, in one line.
TEST_F(BadInput, UnsupportedTensorType) {
  const std::string supported =
      "(supported: f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, "
      "iq4_nl, iq4_xs, bf16)";
  for (GgmlType t : {GgmlType::IQ2_XXS, GgmlType::IQ3_S, GgmlType::TQ1_0, GgmlType::Q8_K}) {
    const std::string m = with_attn_q_as(dir_, std::string(type_name(t)) + "-shape.gguf", t);
    expect_model_error(m, "'blk.0.attn_q.weight' has type " + std::string(type_name(t)) +
                              ", which snapvk does not support " + supported);
  }
  // The newly supported types load and run from the same file.
  for (GgmlType t : {GgmlType::Q5_K, GgmlType::IQ4_XS}) {
    const CliResult r =
        run({"run", "-m", with_attn_q_as(dir_, std::string(type_name(t)) + "-ok.gguf", t), "-p", "Once", "-n", "2"});
    EXPECT_TRUE(r.exited && r.code == 0) << type_name(t) << ": " << r.err;
  }
}

// Tensor bytes that are not a whole number of blocks: a row length that is not a multiple of the
// block size (the header is patched after writing, as a damaged file would have it), and data
// cut inside the last block.
TEST_F(BadInput, TruncatedBlocks) {
  for (GgmlType t : {GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q3_K, GgmlType::IQ4_XS}) {
    const std::string name = type_name(t);
    std::string bytes = slurp(with_attn_q_as(dir_, name + ".gguf", t));
    const std::string key = "blk.0.attn_q.weight";
    const size_t at = bytes.find(key);
    ASSERT_NE(at, std::string::npos);
    const size_t ne0_at = at + key.size() + 4;  // after the name and the dimension count
    uint64_t ne0 = 0;
    std::memcpy(&ne0, bytes.data() + ne0_at, 8);
    ASSERT_EQ(ne0, 256u);
    const uint64_t partial = 256 - 16;  // not a whole number of 32- or 256-element blocks
    std::memcpy(bytes.data() + ne0_at, &partial, 8);
    expect_model_error(write_text(name + "-partial.gguf", bytes),
                       "tensor '" + key + "' row length 240 is not a multiple of the " + name + " block size");
  }
  // The last tensor's data ends half-way through a block.
  std::string bytes = slurp(with_attn_q_as(dir_, "q5_1-last.gguf", GgmlType::Q5_1));
  const GgufFile f = GgufFile::open(file("q5_1-last.gguf"));
  ASSERT_EQ(f.tensors().back().name, "blk.0.attn_q.weight");
  ASSERT_EQ(f.data_offset() + f.tensors().back().offset + f.tensors().back().nbytes, bytes.size());
  bytes.resize(bytes.size() - 11);
  expect_model_error(write_text("q5_1-cut.gguf", bytes), "'blk.0.attn_q.weight' data [offset");
}

TEST_F(BadInput, UnsupportedArchitecture) {
  const std::string m = variant("gpt2.gguf", [](GgufWriter& w) { w.set_string("general.architecture", "gpt2"); });
  expect_model_error(m, "unsupported architecture 'gpt2'");
}

TEST_F(BadInput, AbsurdDimensions) {
  expect_model_error(variant("huge.gguf", [](GgufWriter& w) { w.set_uint32("llama.embedding_length", 1000000000); }),
                     "llama.embedding_length = 1000000000 is out of range");
  expect_model_error(variant("heads0.gguf", [](GgufWriter& w) { w.set_uint32("llama.attention.head_count", 0); }),
                     "llama.attention.head_count = 0 is out of range");
  expect_model_error(variant("heads5.gguf", [](GgufWriter& w) { w.set_uint32("llama.attention.head_count", 5); }),
                     "head_count 5 is not a multiple of head_count_kv 2");
  expect_model_error(variant("layers.gguf", [](GgufWriter& w) { w.set_uint32("llama.block_count", 3); }),
                     "missing tensor 'blk.2.attn_norm.weight'");
}

TEST_F(BadInput, InconsistentTensorShape) {
  const std::string m = variant("shape.gguf", nullptr, [](GgufWriter& w, const GgufTensor& t) {
    if (t.name != "blk.1.ffn_up.weight") return false;
    std::vector<uint8_t> half(t.nbytes / 2);
    w.add_tensor(t.name, t.type, {t.ne[0], t.ne[1] / 2}, half.data(), half.size());
    return true;
  });
  expect_model_error(m, "tensor 'blk.1.ffn_up.weight' has shape [64, 64], expected [64, 128]");
}

TEST_F(BadInput, PromptLongerThanContext) {
  std::string prompt;
  for (int i = 0; i < 20; ++i) prompt += "Once upon a time there was a little girl. ";
  expect_error({"run", "-m", file("good.gguf"), "-c", "16", "-p", prompt}, "longer than the context (16)");
}

TEST_F(BadInput, BadTokensFile) {
  expect_error({"run", "-m", file("good.gguf"), "--tokens-file", write_text("words.txt", "1 2 three 4\n")},
               "'three' is not a token id");
  expect_error({"run", "-m", file("good.gguf"), "--tokens-file", write_text("neg.txt", "1 -5\n")},
               "'-5' is not a token id");
  expect_error({"run", "-m", file("good.gguf"), "--tokens-file", write_text("big.txt", "1 2 300\n")}, "300");
  expect_error({"run", "-m", file("good.gguf"), "--tokens-file", write_text("none.txt", " \n")}, "holds no token ids");
  expect_error({"run", "-m", file("good.gguf"), "--tokens-file", file("missing.txt")}, "cannot open");
  // Found by fuzz_cli (fuzz/regressions/cli): a word of 20+ characters overflowed the parser.
  expect_error(
      {"run", "-m", file("good.gguf"), "--tokens-file", write_text("long.txt", "1 " + std::string(40, '9') + "\n")},
      "'99999999999999999999999999999999...' is not a token id");
  expect_error({"run", "-m", file("good.gguf"), "--tokens-file", "/dev/zero"}, "is larger than 256 MiB");
  expect_error({"run", "-m", file("good.gguf"), "-f", dir_.string()}, "is a directory");
}

TEST(CliParsers, TokenIdsAreCheckedWithoutOverflow) {
  EXPECT_EQ(cli::parse_token_ids(" 1\t2\n2147483647 0", "t"), (std::vector<int32_t>{1, 2, 2147483647, 0}));
  for (const std::string& bad :
       std::vector<std::string>{"2147483648", "99999999999", std::string(25, '7'), "+1", "-1", "0x10", "1e3", "\xff"})
    EXPECT_THROW(cli::parse_token_ids("1 " + bad, "t"), Error) << bad;
  EXPECT_THROW(cli::parse_token_ids("", "t"), Error);
}

// --max-device-memory is read by CLI11 (CLI::AsSizeValue: K, M, G, T, P, E with or without
// "iB", all powers of 1024; whole numbers only).
TEST(CliParsers, DeviceMemorySizesAreReadByCli11) {
  auto budget = [](const std::string& v) {
    cli::Cli c;
    c.globals().check_only = true;  // parse and check, touch no device
    const std::vector<const char*> argv = {"snapvk", "devices", "--max-device-memory", v.c_str()};
    EXPECT_EQ(c.main(int(argv.size()), argv.data()), 0) << v;
    return c.globals().max_device_memory;
  };
  EXPECT_EQ(budget("512M"), 512ull << 20);
  EXPECT_EQ(budget("2GiB"), 2ull << 30);
  EXPECT_EQ(budget("2gb"), 2ull << 30);
  EXPECT_EQ(budget("1536 MiB"), 3ull << 29);
  EXPECT_EQ(budget("1000000"), 1000000u);
  EXPECT_EQ(budget("1"), 1u);
  EXPECT_EQ(budget("15E"), 15ull << 60);
  EXPECT_EQ(budget("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(budget("G"), 1ull << 30) << "CLI11 reads a unit alone as one of it";
}

// Below one byte would mean "no budget" (0); a negative number would wrap to 2^64 - 1, and so
// would sizes past 2^64: each is one line naming the option.
TEST_F(BadInput, DeviceMemorySizesThatAreNotSizes) {
  for (const char* bad : {"0", "0G", "1e-9", "0.5", "1.5G", "-1", "-1G", "+1", "nan", "inf", "16777216T", "16E",
                          "99999999999999999999", "1e30", "12Q", "0x10", "010", ""}) {
    SCOPED_TRACE(bad);
    expect_error({"--max-device-memory", bad, "devices"}, "--max-device-memory");
  }
}

TEST_F(BadInput, BadCliValues) {
  const std::string m = file("good.gguf");
  expect_error({"run", "-m", m, "-p", "hi", "--temp", "-1"}, "--temp");
  expect_error({"run", "-m", m, "-p", "hi", "--kv-type", "q8"}, "unknown --kv-type 'q8'");
  expect_error({"run", "-m", m}, "give exactly one of -p");
  expect_error({"run", "-m", m, "-p", "hi", "-c", "many"}, "--ctx-size");
  expect_error({"frobnicate"}, "subcommand");  // CLI11 reports the missing subcommand first
}

// host/ names the quantity ("the KV window"); the CLI adds the flag that sets it.
TEST_F(BadInput, OptionErrorsNameTheFlag) {
  const std::string m = file("good.gguf");
  expect_error({"run", "-m", m, "-p", "hi", "--kv-policy", "snapkv", "--kv-budget", "16", "--kv-window", "32"},
               "the KV window (32) must be smaller than the KV budget (16); the budget includes the window (option "
               "--kv-window)");
  expect_error({"run", "-m", m, "-p", "hi", "--kv-policy", "snapkv", "--kv-budget", "64", "--kv-kernel", "4"},
               "(option --kv-kernel)");
  expect_error({"run", "-m", m, "-p", "hi", "--kv-type", "q8_0"},
               "KV type q8_0 stores 32-value blocks and this model's head_dim is 16 (f32, f16 or bf16 hold any) "
               "(option --kv-type-k)");
  expect_error({"run", "-m", m, "-p", "hi", "--kv-type-v", "hq3"}, "KV type hq3 stores 32-value blocks");
  expect_error({"run", "-m", m, "-p", "hi", "-ctk", "q4"}, "unknown --kv-type-k 'q4' (f16, f32, q8_0, bf16, q4_0");
  expect_error({"run", "-m", m, "-p", "hi", "-c", "99999999"},
               "n_ctx 99999999 is out of range (1..16777216) (option --ctx-size)");
  expect_error(
      {"profile", "-m", m, "--contexts", "64", "--kv-policy", "snapkv", "--kv-budget", "8", "--kv-window", "8"},
      "(option --kv-window)");
}

TEST_F(BadInput, BadSynthAndConvertArguments) {
  expect_error({"synth", "--preset", "huge", "-o", file("x.gguf")}, "unknown preset 'huge'");
  expect_error({"synth", "--shape", "dim=64,layers=1,heads=3,ff=128,vocab=300", "-o", file("x.gguf")},
               "not a multiple of heads");
  expect_error({"synth", "--preset", "small-gqa", "--type", "q4_k", "-o", file("x.gguf")},
               "q4_K needs rows that are multiples of 256: ff = 704");
  expect_error({"synth", "--preset", "tiny", "--type", "iq2_xxs", "-o", file("x.gguf")},
               "unsupported --type 'iq2_xxs' (supported: f32, f16, q4_0, q4_1, q5_0");
  expect_error({"synth", "--preset", "small-gqa", "--type", "iq4_xs", "-o", file("x.gguf")},
               "iq4_xs needs rows that are multiples of 256: ff = 704");
  expect_error({"synth", "--preset", "tiny"}, "-o FILE");
  expect_error({"convert", "-m", file("nope.gguf"), "--type", "q8_0", "-o", file("x.gguf")}, "cannot open");
  expect_error({"convert", "-m", file("good.gguf"), "--type", "q8_0", "-o", dir_.string() + "/no/such/dir/x.gguf"},
               "cannot create");
}

}  // namespace
}  // namespace snapvk::test
