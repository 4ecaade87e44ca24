// Packs and endless chat on a real instruct model, SmolLM2-135M-Instruct Q4_1: a full f32 pack
// continues bit for bit, a SnapKV pack restores the in-session state byte for byte, and an
// endless chat's next-token predictions are measured against a full-cache conversation of the
// same turns (docs/fidelity.md, "Endless chat").
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "host/pack/pack.h"
#include "host/session/endless.h"
#include "host/session/session.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

struct SmolLM2Pack : VkTest {
  static Model& model() {
    static Model* m = new Model(kernels(), model_path("SmolLM2-135M-Instruct.Q4_1.gguf"));  // never destroyed
    return *m;
  }
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

TEST_F(SmolLM2Pack, FullF32PackIsBitExactAndSnapKVStateIsByteExact) {
  const std::vector<int32_t> doc = chatml(kManual);
  const std::vector<int32_t> q = chatml("<|im_start|>user\nHow do I descale it?<|im_end|>\n<|im_start|>assistant\n");
  ASSERT_GT(doc.size(), 100u);
  for (KvPolicy pol : {KvPolicy::Full, KvPolicy::SnapKV}) {
    SCOPED_TRACE(kv_policy_name(pol));
    SessionOptions o;
    o.n_ctx = uint32_t(doc.size() + q.size() + 16);
    o.kv_type = pol == KvPolicy::Full ? KvType::F32 : KvType::F16;
    o.kv.policy = pol;
    if (pol == KvPolicy::SnapKV) o.kv.budget = 48, o.kv.window = 16;
    Session a(model(), o);
    a.prefill(doc);
    const Pack p = read_pack(write_pack(pack_of(a, doc)), "manual.svkv");
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

// KL(p || q) of two softmaxes over logits.
double kl(const std::vector<float>& p_logits, const std::vector<float>& q_logits) {
  auto log_softmax = [](const std::vector<float>& x) {
    const double m = *std::max_element(x.begin(), x.end());
    double sum = 0;
    for (float v : x) sum += std::exp(double(v) - m);
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = double(x[i]) - m - std::log(sum);
    return out;
  };
  const std::vector<double> lp = log_softmax(p_logits), lq = log_softmax(q_logits);
  double d = 0;
  for (size_t i = 0; i < lp.size(); ++i) d += std::exp(lp[i]) * (lp[i] - lq[i]);
  return d;
}

size_t argmax(const std::vector<float>& v) { return size_t(std::max_element(v.begin(), v.end()) - v.begin()); }

// 100 turns, each a user question and a fixed answer (teacher-forced: both conversations hold the
// same tokens). After each part, the next-token prediction of the endless sessions is compared
// with the full cache's: 200 predictions per budget.
TEST_F(SmolLM2Pack, EndlessChatFollowsAFullCacheConversation) {
  const char* qa[][2] = {
      {"What is the capital of France?", "The capital of France is Paris."},
      {"Name a primary colour.", "Red is a primary colour."},
      {"How many legs does a spider have?", "A spider has eight legs."},
      {"What do bees make?", "Bees make honey."},
      {"What is two plus three?", "Two plus three is five."},
      {"Which planet is called the red planet?", "Mars is called the red planet."},
      {"What is frozen water called?", "Frozen water is called ice."},
      {"What do you call a baby cat?", "A baby cat is called a kitten."},
  };
  // docs/fidelity.md also lists C = 192, measured by this test with {96, 192} (twice the time),
  // and its figures are of 100 turns (SNAPVK_ENDLESS_TURNS=100). The suite runs 24: three rounds
  // of the questions, the cache compacted again at every turn's end from the second on, which is
  // all that the assertions check; more turns only cost time (the full cache grows).
  const std::vector<uint32_t> budgets = {96};
  const char* turns_env = std::getenv("SNAPVK_ENDLESS_TURNS");
  const int turns = turns_env && std::atoi(turns_env) > 2 ? std::atoi(turns_env) : 24;
  SessionOptions full_o;
  full_o.n_ctx = 4096;
  Session full(model(), full_o);
  std::vector<std::unique_ptr<EndlessChat>> endless;
  for (uint32_t C : budgets) {
    SessionOptions o;
    o.n_ctx = C + 96;  // the budget and one turn
    o.kv.policy = KvPolicy::SnapKV, o.kv.budget = C, o.kv.window = 16;
    endless.push_back(std::make_unique<EndlessChat>(model(), o));
  }
  std::vector<uint32_t> agree(budgets.size(), 0);
  std::vector<double> kl_sum(budgets.size(), 0), kl_max(budgets.size(), 0);
  std::vector<uint32_t> most_rows(budgets.size(), 0);
  uint32_t n = 0;
  uint64_t memory_turn1 = 0;
  for (int turn = 0; turn < turns; ++turn) {
    const auto& [question, reply] = qa[turn % 8];
    const std::string user = (turn == 0 ? "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" : "") +
                             std::string("<|im_start|>user\n") + question + "<|im_end|>\n<|im_start|>assistant\n";
    for (const std::string& part : {user, std::string(reply) + "<|im_end|>\n"}) {
      const std::vector<int32_t> t = chatml(part);
      const std::vector<float> ref = copy(full.prefill(t));
      for (size_t b = 0; b < budgets.size(); ++b) {
        const std::vector<float> got = copy(endless[b]->session().prefill(t));
        agree[b] += argmax(got) == argmax(ref);
        const double d = kl(ref, got);
        kl_sum[b] += d, kl_max[b] = std::max(kl_max[b], d);
      }
      ++n;
    }
    for (size_t b = 0; b < budgets.size(); ++b) {
      const Session& s = endless[b]->session();
      most_rows[b] = std::max(most_rows[b], s.cache().max_len(s.n_past() - s.cache().compacted_len()));
      endless[b]->end_turn();
      ASSERT_LE(s.cache().max_len(s.n_past() - s.cache().compacted_len()), budgets[b]) << "turn " << turn;
    }
    if (turn == 1) memory_turn1 = ctx().memory().current();
    if (turn > 1) ASSERT_EQ(ctx().memory().current(), memory_turn1) << "turn " << turn;
  }
  std::printf("endless chat, SmolLM2-135M-Instruct Q4_1, %u predictions over %d turns (%u positions), f16 cache\n", n,
              turns, full.n_past());
  std::printf("| budget C | window W | most rows held | top-1 agreement | mean KL | max KL |\n");
  for (size_t b = 0; b < budgets.size(); ++b) {
    std::printf("| %u | 16 | %u | %.3f | %.4f | %.4f |\n", budgets[b], most_rows[b], double(agree[b]) / n,
                kl_sum[b] / n, kl_max[b]);
    EXPECT_GE(double(agree[b]) / n, 0.6) << "budget " << budgets[b];
  }
}

}  // namespace
}  // namespace snapvk::test
