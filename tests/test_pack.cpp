// Knowledge packs (docs/packs.md): a document's state saved and loaded gives the same tokens and
// logits as prefilling it (bit for bit with a full f32 cache; the compressed state byte for byte),
// and every bad pack is refused with a one-line error before the session changes; on stories260K,
// and on a real instruct model (SmolLM2Pack). The C API's packs are in test_api.cpp (ApiPack).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>

#include "host/pack/pack.h"
#include "host/report/synth.h"
#include "host/session/session.h"
#include "tests/cli_runner.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

struct PackTest : VkTest {
  static Model& stories() { return stories_model(); }
  static std::vector<int32_t> doc(const Model& m, int repeats) {
    std::string text;
    for (int i = 0; i < repeats; ++i)
      text += "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. ";
    return m.tokenizer().encode(text, true);
  }
  static std::vector<int32_t> question(const Model& m) { return m.tokenizer().encode(" One day, her mom", false); }
  static SessionOptions options(KvPolicy p, KvType t, uint32_t n_ctx) {
    SessionOptions o;
    o.n_ctx = n_ctx;
    o.n_batch = 32;
    o.kv_type_k = o.kv_type_v = t;
    o.kv.policy = p;
    if (p != KvPolicy::Full) o.kv.budget = 40, o.kv.window = 8;
    return o;
  }
  // The logits after the question, then after each of n greedy tokens; the tokens in `tokens`.
  static std::vector<std::vector<float>> answer(Session& s, std::span<const int32_t> q, int n,
                                                std::vector<int32_t>& tokens) {
    std::vector<std::vector<float>> out;
    auto logits = s.prefill(q);
    for (int i = 0;; ++i) {
      out.emplace_back(logits.begin(), logits.end());
      if (i == n) break;
      const int32_t t = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      tokens.push_back(t);
      logits = s.decode(t);
    }
    return out;
  }
  static bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
  }
  static void expect_same_image(const KvImage& a, const KvImage& b) {
    ASSERT_EQ(a.n_past, b.n_past);
    ASSERT_EQ(a.compacted_len, b.compacted_len);
    ASSERT_EQ(a.layers.size(), b.layers.size());
    for (size_t l = 0; l < a.layers.size(); ++l) {
      EXPECT_EQ(a.layers[l].base, b.layers[l].base) << "layer " << l;
      EXPECT_EQ(a.layers[l].rows, b.layers[l].rows) << "layer " << l;
      EXPECT_TRUE(a.layers[l].k == b.layers[l].k) << "K of layer " << l;
      EXPECT_TRUE(a.layers[l].v == b.layers[l].v) << "V of layer " << l;
    }
  }
  // The pack of a session after `d`, through its bytes.
  static Pack round_trip(Session& s, const std::vector<int32_t>& d) {
    return read_pack(write_pack(pack_of(s, d)), "test");
  }
};

// Full cache, f32: pack + question gives exactly what one session gives for document then question.
void full_pack_is_exact(const Model& m, const std::vector<int32_t>& d, const std::vector<int32_t>& q, int n) {
  const SessionOptions o = PackTest::options(KvPolicy::Full, KvType::F32, uint32_t(d.size() + q.size() + n + 1));
  Session one(m, o);
  one.prefill(d);
  const Pack p = PackTest::round_trip(one, d);
  std::vector<int32_t> t_one, t_pack;
  const auto l_one = PackTest::answer(one, q, n, t_one);
  Session loaded(m, o);
  load_pack(loaded, p, "test");
  EXPECT_EQ(loaded.n_past(), d.size());
  const auto l_pack = PackTest::answer(loaded, q, n, t_pack);
  EXPECT_EQ(t_one, t_pack);
  for (size_t i = 0; i < l_one.size(); ++i) EXPECT_TRUE(PackTest::same_bits(l_one[i], l_pack[i])) << "step " << i;
  // one prefill of document + question: the same first logits, bit for bit
  Session whole(m, o);
  std::vector<int32_t> dq = d;
  dq.insert(dq.end(), q.begin(), q.end());
  auto l_whole = whole.prefill(dq);
  EXPECT_TRUE(PackTest::same_bits(std::vector<float>(l_whole.begin(), l_whole.end()), l_pack[0]));
}

TEST_F(PackTest, FullF32PackPlusQuestionIsBitExact) {
  full_pack_is_exact(stories(), doc(stories(), 4), question(stories()), 16);
}

// Compressed: the loaded state equals the in-session state byte for byte, and the answers match.
TEST_F(PackTest, CompressedPackRestoresTheSameStateAndAnswers) {
  for (KvPolicy pol : {KvPolicy::SnapKV, KvPolicy::PyramidKV, KvPolicy::StreamingLLM, KvPolicy::H2O, KvPolicy::AdaKV})
    for (KvType t : {KvType::F16, KvType::Q8_0, KvType::F32}) {
      if (t == KvType::Q8_0 && stories().config().head_dim % 32) continue;
      SCOPED_TRACE(std::string(kv_policy_name(pol)) + " " + kv_type_name(t));
      const auto d = doc(stories(), 4), q = question(stories());
      const SessionOptions o = options(pol, t, 256);
      Session in_session(stories(), o);
      in_session.prefill(d);
      ASSERT_GT(d.size(), o.kv.budget);  // compressed
      const Pack p = round_trip(in_session, d);
      Session loaded(stories(), o);
      load_pack(loaded, p, "test");
      expect_same_image(in_session.save_state(), loaded.save_state());
      EXPECT_TRUE(same_bits(std::vector<float>(in_session.logits().begin(), in_session.logits().end()),
                            std::vector<float>(loaded.logits().begin(), loaded.logits().end())));
      std::vector<int32_t> t1, t2;
      const auto l1 = answer(in_session, q, 8, t1), l2 = answer(loaded, q, 8, t2);
      EXPECT_EQ(t1, t2);
      for (size_t i = 0; i < l1.size(); ++i) EXPECT_TRUE(same_bits(l1[i], l2[i])) << "step " << i;
    }
}

// A compressed pack loads into a session of a larger context (its room grows), and into a full-policy session.
TEST_F(PackTest, CompressedPackLoadsIntoAnotherContextSize) {
  const auto d = doc(stories(), 4), q = question(stories());
  Session a(stories(), options(KvPolicy::SnapKV, KvType::F16, 200));
  a.prefill(d);
  const Pack p = round_trip(a, d);
  Session b(stories(), options(KvPolicy::Full, KvType::F16, 400));
  load_pack(b, p, "test");
  expect_same_image(a.save_state(), b.save_state());
  std::vector<int32_t> t1, t2;
  const auto l1 = answer(a, q, 6, t1), l2 = answer(b, q, 6, t2);
  EXPECT_EQ(t1, t2);
  EXPECT_TRUE(same_bits(l1.back(), l2.back()));
}

// Question-aware: the question votes as the window, then leaves the cache; asking it after the
// pack equals the same steps in one session.
TEST_F(PackTest, QuestionAwarePackDropsTheQuestionAndAnswersAsInSession) {
  const auto d = doc(stories(), 4), q = question(stories());
  SessionOptions o = options(KvPolicy::SnapKV, KvType::F32, 256);
  const Pack p = read_pack(write_pack(make_pack(stories(), o, d, q)), "test");
  EXPECT_EQ(p.query, q);
  EXPECT_EQ(p.state.n_past, d.size());
  EXPECT_TRUE(p.logits.empty());
  EXPECT_EQ(p.policy.window, q.size());
  o.kv.window = uint32_t(q.size());
  Session in_session(stories(), o);
  std::vector<int32_t> dq = d;
  dq.insert(dq.end(), q.begin(), q.end());
  in_session.prefill(dq);
  in_session.drop_prompt_tail(uint32_t(q.size()));
  Session loaded(stories(), o);
  load_pack(loaded, p, "test");
  expect_same_image(in_session.save_state(), loaded.save_state());
  std::vector<int32_t> t1, t2;
  const auto l1 = answer(in_session, q, 6, t1), l2 = answer(loaded, q, 6, t2);
  EXPECT_EQ(t1, t2);
  EXPECT_TRUE(same_bits(l1[0], l2[0]));
  // and it is not the question-agnostic selection
  Session agnostic(stories(), options(KvPolicy::SnapKV, KvType::F32, 256));
  agnostic.prefill(d);
  EXPECT_NE(agnostic.save_state().layers[0].k, loaded.save_state().layers[0].k);
}

// Gemma 3's sliding-window layers: a pack stores each ring's last positions in order, so it loads
// into a session whose ring has another size (another batch); the same size continues bit for bit.
TEST_F(PackTest, SlidingWindowRingsRestoreIntoAnyRingSize) {
  SynthShape g;
  g.arch = "gemma3", g.n_embd = 256, g.n_layer = 3, g.n_head = 4, g.n_head_kv = 2, g.n_ff = 512, g.n_vocab = 384;
  g.n_ctx = 256, g.sliding_window = 8, g.swa_pattern = 3, g.tied_output = true;
  const std::string path =
      (std::filesystem::temp_directory_path() / ("snapvk_pack_g3_" + std::to_string(::getpid()) + ".gguf")).string();
  write_synth_gguf(g, path);
  Model m(k(), path);
  ASSERT_TRUE(m.config().is_swa(0) && !m.config().is_swa(2));
  const std::vector<int32_t> d = m.tokenizer().encode("Once upon a time, there was a little girl named Lily.", true);
  for (KvPolicy pol : {KvPolicy::Full, KvPolicy::SnapKV}) {
    SessionOptions o = options(pol, KvType::F32, 64);
    o.n_batch = 5;  // a ring of 8 + 5 - 1 slots that has wrapped
    if (pol == KvPolicy::SnapKV) o.kv.budget = 12, o.kv.window = 4, o.kv.kernel = 3;
    Session a(m, o);
    a.prefill(d);
    const Pack p = round_trip(a, d);
    Session same(m, o);
    load_pack(same, p, "g3");
    expect_same_image(a.save_state(), same.save_state());
    o.n_batch = 64;  // a ring of 64 slots
    Session wide(m, o);
    load_pack(wide, p, "g3");
    EXPECT_EQ(wide.cache().layer(0).ring, 64u);
    expect_same_image(a.save_state(), wide.save_state());
    std::vector<int32_t> t1, t2, t3;
    const auto l1 = answer(a, question(m), 6, t1), l2 = answer(same, question(m), 6, t2),
               l3 = answer(wide, question(m), 6, t3);
    for (size_t i = 0; i < l1.size(); ++i) {
      EXPECT_TRUE(same_bits(l1[i], l2[i])) << kv_policy_name(pol) << " step " << i;
      EXPECT_LE(max_abs_diff(l3[i], l1[i]), 1e-4f) << kv_policy_name(pol) << " step " << i;
    }
  }
  std::filesystem::remove(path);
}

// ---- bad packs: one-line errors, the session unchanged ----

struct BadPack : PackTest {
  void SetUp() override {
    PackTest::SetUp();
    d = doc(stories(), 2);
    Session s(stories(), options(KvPolicy::SnapKV, KvType::F16, 128));
    s.prefill(d);
    bytes = write_pack(pack_of(s, d));
  }
  // read and load into a session that holds a prompt: the error, and the session as it was
  std::string refuse(const std::vector<uint8_t>& b, SessionOptions o = options(KvPolicy::Full, KvType::F16, 128)) {
    Session s(stories(), o);
    const auto before = s.prefill(doc(stories(), 1));
    const std::vector<float> logits(before.begin(), before.end());
    const uint32_t n_past = s.n_past();
    std::string msg;
    try {
      load_pack(s, read_pack(b, "bad.svkv"), "bad.svkv");
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument);
      msg = e.what();
    }
    if (msg.empty()) ADD_FAILURE() << "a bad pack was accepted";
    EXPECT_EQ(s.n_past(), n_past);
    EXPECT_TRUE(same_bits(std::vector<float>(s.logits().begin(), s.logits().end()), logits));
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return msg;
  }
  static void fix_checksum(std::vector<uint8_t>& b) {
    const uint64_t sum = pack_hash(b.data() + kPackPrelude, b.size() - kPackPrelude);
    for (int i = 0; i < 8; ++i) b[24 + i] = uint8_t(sum >> (8 * i));
  }
  std::vector<int32_t> d;
  std::vector<uint8_t> bytes;
};

TEST_F(BadPack, TheGoodPackLoads) {
  Session s(stories(), options(KvPolicy::Full, KvType::F16, 128));
  load_pack(s, read_pack(bytes, "good.svkv"), "good.svkv");
  EXPECT_EQ(s.n_past(), d.size());
}

TEST_F(BadPack, Truncated) {
  for (size_t n : {size_t(0), size_t(7), size_t(8), size_t(31), size_t(40), bytes.size() / 2, bytes.size() - 1}) {
    const std::string msg = refuse(std::vector<uint8_t>(bytes.begin(), bytes.begin() + n));
    EXPECT_TRUE(msg.find("truncated") != std::string::npos || msg.find("not a snapvk pack") != std::string::npos)
        << n << ": " << msg;
  }
  EXPECT_NE(refuse(std::vector<uint8_t>(bytes.begin(), bytes.end() - 1)).find("truncated"), std::string::npos);
}

TEST_F(BadPack, CorruptedIsACheckumError) {
  for (size_t at : {size_t(kPackPrelude), size_t(kPackPrelude + 10), bytes.size() / 2, bytes.size() - 1}) {
    std::vector<uint8_t> b = bytes;
    b[at] ^= 0x10;
    EXPECT_NE(refuse(b).find("checksum"), std::string::npos) << at;
  }
}

TEST_F(BadPack, InconsistentHeaderWithAValidChecksum) {
  // A header that lies about its rows by one (still no more than the positions held, so no
  // earlier check objects): the payload no longer matches what the header describes, and the
  // size check refuses it before anything is read, with an InvalidArgument (refuse() checks it).
  std::vector<uint8_t> b = bytes;
  const std::string text(b.begin() + kPackPrelude, b.end());
  const size_t at = text.find("\"rows\":[");
  ASSERT_NE(at, std::string::npos);
  size_t last = kPackPrelude + at + 8;  // the last digit of the first head's row count
  while (std::isdigit(b[last + 1])) ++last;
  ASSERT_TRUE(std::isdigit(b[last]));
  b[last] = b[last] == '0' ? '1' : char(b[last] - 1);  // same length: the header keeps its size
  fix_checksum(b);
  const std::string msg = refuse(b);
  EXPECT_NE(msg.find("bad.svkv"), std::string::npos) << msg;
  EXPECT_NE(msg.find("payload of"), std::string::npos) << "not refused by the size check: " << msg;
  EXPECT_NE(msg.find("the header describes"), std::string::npos) << "not refused by the size check: " << msg;
}

TEST_F(BadPack, AnotherFormatVersion) {
  std::vector<uint8_t> b = bytes;
  b[8] = 2;
  EXPECT_NE(refuse(b).find("format version 2"), std::string::npos);
}

TEST_F(BadPack, AnotherModel) {
  Pack p = read_pack(bytes, "x");
  p.model.tensor_hash ^= 1;  // same shapes, other weights
  EXPECT_NE(refuse(write_pack(p)).find("another model"), std::string::npos);
  p = read_pack(bytes, "x");
  p.model.n_layer += 1;
  p.state.layers.push_back(p.state.layers.back());
  EXPECT_NE(refuse(write_pack(p)).find("another model"), std::string::npos);
}

TEST_F(BadPack, AnotherKvType) {
  EXPECT_NE(refuse(bytes, options(KvPolicy::Full, KvType::F32, 128)).find("f16 KV cache"), std::string::npos);
}

TEST_F(BadPack, ContextTooSmall) {
  EXPECT_NE(refuse(bytes, options(KvPolicy::Full, KvType::F16, uint32_t(d.size() - 1))).find("context"),
            std::string::npos);
}

TEST_F(BadPack, QuestionThatNoLongerFits) {
  Session s(stories(), options(KvPolicy::Full, KvType::F16, uint32_t(d.size() + 2)));
  load_pack(s, read_pack(bytes, "p"), "p");
  const auto q = question(stories());
  ASSERT_GT(q.size(), 2u);
  try {
    s.prefill(q);
    FAIL() << "a question that does not fit was taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not fit the context"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s.n_past(), d.size());
}

// ---- the CLI ----

TEST_F(PackTest, CliPackThenRunEqualsOneRun) {
  const std::string m = model_path("stories260K.gguf");
  const auto dir = std::filesystem::temp_directory_path() / ("snapvk_pack_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string pack = (dir / "doc.svkv").string(), text = "Once upon a time, there was a little girl named Lily.";
  for (const char* policy : {"full", "snapkv"}) {
    std::vector<std::string> kv = {"--kv-type", "f32", "--kv-policy", policy};
    if (std::string(policy) == "snapkv") kv.insert(kv.end(), {"--kv-budget", "8", "--kv-window", "4"});
    std::vector<std::string> args = {"pack", "-m", m, "-p", text, "-o", pack};
    args.insert(args.end(), kv.begin(), kv.end());
    const CliResult made = run_cli(args);
    ASSERT_EQ(made.code, 0) << made.err;
    const CliResult with_pack =
        run_cli({"run", "-m", m, "--pack", pack, "-p", " She", "-n", "12", "--temp", "0", "--json"});
    ASSERT_EQ(with_pack.code, 0) << with_pack.err;
    args = {"run", "-m", m, "-p", text + " She", "-n", "12", "--temp", "0", "--json"};
    args.insert(args.end(), kv.begin(), kv.end());
    const CliResult one = run_cli(args);
    ASSERT_EQ(one.code, 0) << one.err;
    auto generated = [](const std::string& out) { return out.substr(out.find("\"generated_tokens\""), 80); };
    // a full cache: the same run; a compressed one differs (one run's window is the question)
    if (std::string(policy) == "full") EXPECT_EQ(generated(with_pack.out), generated(one.out));
    EXPECT_NE(with_pack.out.find("\"pack_tokens\":"), std::string::npos) << policy;
  }
  // a bad pack: one line, exit 1
  {
    std::fstream f(pack, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x7f');
  }
  const CliResult bad = run_cli({"run", "-m", m, "--pack", pack, "-p", " She", "-n", "4"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("checksum"), std::string::npos) << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  const CliResult missing = run_cli({"run", "-m", m, "--pack", (dir / "none.svkv").string(), "-p", "x"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("cannot open pack"), std::string::npos) << missing.err;
  std::filesystem::remove_all(dir);
}

// The CLI refuses a pack of another model and one of another --kv-type, in one line each.
TEST_F(PackTest, CliRefusesAnotherModelAndKvType) {
  const std::string m = model_path("stories260K.gguf");
  const std::string pack =
      (std::filesystem::temp_directory_path() / ("snapvk_pack_m" + std::to_string(::getpid()) + ".svkv")).string();
  ASSERT_EQ(run_cli({"pack", "-m", m, "-p", "Once upon a time", "--kv-type", "f32", "-o", pack}).code, 0);
  const CliResult other =
      run_cli({"run", "-m", model_path("SmolLM2-135M-Instruct.Q4_1.gguf"), "--pack", pack, "-p", "x"});
  EXPECT_EQ(other.code, 1);
  EXPECT_NE(other.err.find("made with another model"), std::string::npos) << other.err;
  EXPECT_EQ(std::count(other.err.begin(), other.err.end(), '\n'), 1) << other.err;
  const CliResult type = run_cli({"run", "-m", m, "--pack", pack, "-p", "x", "--kv-type", "f16"});
  EXPECT_EQ(type.code, 1);
  EXPECT_NE(type.err.find("holds a f32 KV cache"), std::string::npos) << type.err;
  const CliResult adopted = run_cli({"run", "-m", m, "--pack", pack, "-p", " there", "-n", "2"});
  EXPECT_EQ(adopted.code, 0) << adopted.err;  // without --kv-type the pack's is taken
  const CliResult query = run_cli({"pack", "-m", m, "-p", "x", "--pack-query", "y", "-o", pack});
  EXPECT_EQ(query.code, 1);
  EXPECT_NE(query.err.find("--pack-query needs a compressing --kv-policy"), std::string::npos) << query.err;
  std::filesystem::remove(pack);
}

// ---- a real instruct model: SmolLM2-135M-Instruct Q4_1 ---------------------------------------

// A full f32 pack continues bit for bit, a SnapKV pack restores the in-session state byte for byte.
struct SmolLM2Pack : VkTest {
  static Model& model() { return smollm2_model(); }
  static std::vector<int32_t> chatml(const std::string& text, bool bos = false) {
    return model().tokenizer().encode(text, bos, true);
  }
  static std::vector<float> copy(std::span<const float> s) { return std::vector<float>(s.begin(), s.end()); }
};

const char* kManual =
    "<|im_start|>system\nYou answer questions about this manual.\n"
    "The Zephyr 3 kettle holds 1.7 litres. Fill it between the MIN and MAX marks. Press the switch on the "
    "handle to start; the light turns blue. The kettle stops by itself when the water boils. To descale, boil "
    "half a litre of water with two spoons of citric acid, leave it for an hour and rinse twice. The filter in "
    "the spout lifts out for cleaning. Never put the base in water. The warranty lasts two years from the date "
    "of purchase.<|im_end|>\n";

// ... and so is a SnapKV pack of K and V in other types, both rotated (hq4 / hq3: K's centre goes
// with its rows), which a session of other types refuses.
TEST_F(SmolLM2Pack, FullF32PackIsBitExactAndSnapKVStateIsByteExact) {
  const std::vector<int32_t> doc = chatml(kManual);
  const std::vector<int32_t> q = chatml("<|im_start|>user\nHow do I descale it?<|im_end|>\n<|im_start|>assistant\n");
  ASSERT_GT(doc.size(), 100u);
  for (const auto& [pol, types] : {std::pair{KvPolicy::Full, KvTypes{KvType::F32, KvType::F32}},
                                   std::pair{KvPolicy::SnapKV, KvTypes{}},
                                   std::pair{KvPolicy::SnapKV, KvTypes{KvType::HQ4, KvType::HQ3}}}) {
    SCOPED_TRACE(std::string(kv_policy_name(pol)) + " " + kv_types_name(types));
    SessionOptions o;
    o.n_ctx = uint32_t(doc.size() + q.size() + 16);
    o.set_kv_types(types);
    o.kv.policy = pol;
    if (pol == KvPolicy::SnapKV) o.kv.budget = 48, o.kv.window = 16;
    Session a(model(), o);
    a.prefill(doc);
    const Pack p = read_pack(write_pack(pack_of(a, doc)), "manual.svkv");
    EXPECT_EQ(p.kv_types, types);
    if (types.k != types.v) {
      SessionOptions other = o;
      other.set_kv_types({types.k, types.k});
      Session c(model(), other);
      try {
        load_pack(c, p, "manual.svkv");
        ADD_FAILURE() << "a pack of another V type loaded";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("holds a hq4/hq3 KV cache, this session's is hq4"), std::string::npos)
            << e.what();
      }
    }
    Session b(model(), o);
    load_pack(b, p, "manual.svkv");
    const KvImage ia = a.save_state(), ib = b.save_state();
    for (size_t l = 0; l < ia.layers.size(); ++l) {
      EXPECT_TRUE(ia.layers[l].k == ib.layers[l].k) << "layer " << l;
      EXPECT_TRUE(ia.layers[l].v == ib.layers[l].v) << "layer " << l;
    }
    std::vector<float> la = copy(a.prefill(q)), lb = copy(b.prefill(q));
    for (int i = 0; i < 8; ++i) {
      ASSERT_EQ(std::memcmp(la.data(), lb.data(), la.size() * 4), 0) << "step " << i;
      const int32_t t = int32_t(std::max_element(la.begin(), la.end()) - la.begin());
      la = copy(a.decode(t)), lb = copy(b.decode(t));
    }
  }
}

}  // namespace
}  // namespace snapvk::test
