// The generation loop (host/session/generate.h): each stop condition, the choice hook, what enters the
// cache with and without decode_last, and UTF-8-safe streaming of pieces.
#include <gtest/gtest.h>

#include <string>

#include "host/model/unicode.h"
#include "host/session/generate.h"
#include "host/session/session.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

TEST(Utf8Stream, HoldsAnIncompleteCharacterUntilItsBytesArrive) {
  Utf8Stream u;
  EXPECT_EQ(u.push("ab"), "ab");
  EXPECT_EQ(u.push("c\xC3"), "c");        // the lead of a 2-byte character
  EXPECT_EQ(u.push("\xA9"), "\xC3\xA9");  // é complete
  EXPECT_EQ(u.push("\xE2\x82"), "");      // 2 of the 3 bytes of €
  EXPECT_EQ(u.push("\xAC!"), "\xE2\x82\xAC!");
  EXPECT_EQ(u.push("\xF0\x9F\x98"), "");  // 3 of the 4 bytes of an emoji
  EXPECT_EQ(u.push("\x80"), "\xF0\x9F\x98\x80");
  EXPECT_EQ(u.flush(), "");
}

TEST(Utf8Stream, BytesThatCannotBeCompletedPassAndFlushReturnsTheRest) {
  Utf8Stream u;
  EXPECT_EQ(u.push("\xFF"), "\xFF");    // never a lead byte
  EXPECT_EQ(u.push("\x80x"), "\x80x");  // a stray continuation byte
  EXPECT_EQ(u.push("\xC0"), "\xC0");    // an overlong lead: no character follows it
  EXPECT_EQ(u.push("y\xE2"), "y");
  EXPECT_EQ(u.flush(), "\xE2");  // the end of the stream: what is held comes out as it is
  EXPECT_EQ(u.flush(), "");
}

struct GenerateTest : VkTest {
  static Model& model() { return stories_model(); }
  static SessionOptions options(uint32_t n_ctx) {
    SessionOptions o;
    o.n_ctx = n_ctx;
    o.kv_type_k = o.kv_type_v = KvType::F32;
    return o;
  }
  static std::vector<int32_t> prompt() { return model().tokenizer().encode("Once upon a time", true); }
  static GenerateResult run(Session& s, GenerateOptions o) {
    Sampler greedy(SamplerParams{.temp = 0});
    GenerateResult r;
    generate(s, greedy, s.prefill(prompt()), o, r);
    return r;
  }
};

TEST_F(GenerateTest, MaxTokensWithAndWithoutDecodingTheLast) {
  const size_t L = prompt().size();
  Session a(model(), options(256)), b(model(), options(256));
  GenerateOptions o;
  o.max_tokens = 12;
  o.stop_at_eog = false;
  const GenerateResult all = run(a, o);
  o.decode_last = false;
  const GenerateResult saved = run(b, o);
  EXPECT_EQ(all.stop, StopReason::MaxTokens);
  EXPECT_EQ(saved.stop, StopReason::MaxTokens);
  EXPECT_EQ(all.tokens, saved.tokens);
  ASSERT_EQ(all.tokens.size(), 12u);
  EXPECT_EQ(all.decoded, 12u);
  EXPECT_EQ(saved.decoded, 11u);
  EXPECT_EQ(a.n_past(), L + 12);
  EXPECT_EQ(b.n_past(), L + 11);
  std::string text;
  for (int32_t t : all.tokens) text += model().tokenizer().token_to_piece(t);
  EXPECT_EQ(all.text, text);
  EXPECT_GE(all.wall_ms, all.decode_ms);
}

TEST_F(GenerateTest, ContextFullStopsWhereNoTokenCanEnterTheCache) {
  const uint32_t L = uint32_t(prompt().size());
  GenerateOptions o;
  o.stop_at_eog = false;
  Session a(model(), options(L + 5));
  const GenerateResult all = run(a, o);
  EXPECT_EQ(all.stop, StopReason::ContextFull);
  EXPECT_EQ(all.tokens.size(), 5u);
  EXPECT_EQ(a.n_past(), L + 5);
  // Without decoding the last token, one more fits: it is chosen from the last logits.
  o.decode_last = false;
  Session b(model(), options(L + 5));
  const GenerateResult saved = run(b, o);
  EXPECT_EQ(saved.stop, StopReason::ContextFull);
  EXPECT_EQ(saved.tokens.size(), 6u);
  EXPECT_EQ(b.n_past(), L + 5);
}

TEST_F(GenerateTest, CallbackStopsAfterItsTokenAndChooseOverridesTheSampler) {
  Session s(model(), options(256));
  GenerateOptions o;
  o.stop_at_eog = false;
  std::vector<int32_t> seen, decoded;
  o.choose = [](std::span<const float>) { return int32_t(300); };  // forced, whatever the logits
  o.on_token = [&](int32_t t, std::string_view) {
    seen.push_back(t);
    return seen.size() < 3;
  };
  o.on_decoded = [&](int32_t t, std::span<const float> logits) {
    decoded.push_back(t);
    EXPECT_EQ(logits.size(), model().config().n_vocab);
  };
  const GenerateResult r = run(s, o);
  EXPECT_EQ(r.stop, StopReason::Callback);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(3, 300));
  EXPECT_EQ(seen, r.tokens);
  EXPECT_EQ(decoded, r.tokens) << "with decode_last every token the callback saw is in the cache";
}

TEST_F(GenerateTest, EndOfGenerationIsNeitherEmittedNorDecoded) {
  Session s(model(), options(256));
  const int32_t eos = model().tokenizer().eos();
  GenerateOptions o;
  uint32_t step = 0;
  o.choose = [&](std::span<const float> lg) { return ++step == 4 ? eos : argmax(lg); };
  const uint32_t before = uint32_t(prompt().size());
  const GenerateResult r = run(s, o);
  EXPECT_EQ(r.stop, StopReason::EndOfGeneration);
  EXPECT_EQ(r.last_token, eos);
  EXPECT_EQ(r.tokens.size(), 3u);
  EXPECT_EQ(s.n_past(), before + 3);
}

TEST_F(GenerateTest, StopTokensEndGenerationAsTheVocabularysOwnDo) {
  Session s(model(), options(256));
  const int32_t stop = 300;  // an ordinary token: a chat template's end of turn would be one
  ASSERT_FALSE(model().tokenizer().is_eog(stop));
  GenerateOptions o;
  o.stop_tokens = {stop};
  uint32_t step = 0;
  o.choose = [&](std::span<const float> lg) { return ++step == 3 ? stop : argmax(lg); };
  const GenerateResult r = run(s, o);
  EXPECT_EQ(r.stop, StopReason::EndOfGeneration);
  EXPECT_EQ(r.last_token, stop);
  EXPECT_EQ(r.tokens.size(), 2u);
}

TEST_F(GenerateTest, CancelFlagStopsBeforeTheNextToken) {
  Session s(model(), options(256));
  std::atomic<bool> cancel{false};
  GenerateOptions o;
  o.stop_at_eog = false;
  o.cancel = &cancel;
  o.on_token = [&](int32_t, std::string_view) {
    cancel.store(true);
    return true;
  };
  const GenerateResult r = run(s, o);
  EXPECT_EQ(r.stop, StopReason::Cancelled);
  EXPECT_EQ(r.tokens.size(), 1u);
  EXPECT_FALSE(cancel.load()) << "the flag is cleared when seen";
}

TEST_F(GenerateTest, StreamedTextIsTheGeneratedTextInWholeCharacters) {
  // stories260K's byte tokens are byte + 3: "é" (C3 A9) and "€" (E2 82 AC) split over five tokens
  const std::vector<int32_t> bytes = {0xC3 + 3, 0xA9 + 3, 0xE2 + 3, 0x82 + 3, 0xAC + 3};
  Session s(model(), options(256));
  GenerateOptions o;
  o.max_tokens = uint32_t(bytes.size());
  o.stop_at_eog = false;
  size_t step = 0;
  o.choose = [&](std::span<const float>) { return bytes[step++]; };
  std::vector<std::string> chunks;
  o.on_text = [&](std::string_view t) { chunks.emplace_back(t); };
  const GenerateResult r = run(s, o);
  EXPECT_EQ(r.text, "\xC3\xA9\xE2\x82\xAC") << "the pieces are the raw bytes";
  EXPECT_EQ(chunks, (std::vector<std::string>{"\xC3\xA9", "\xE2\x82\xAC"})) << "each chunk is whole characters";
  std::string streamed;
  for (const auto& c : chunks) {
    for (size_t i = 0; i < c.size(); i += unicode::utf8_valid_len(c, i))
      ASSERT_GT(unicode::utf8_valid_len(c, i), 0u) << "a chunk ends inside a character";
    streamed += c;
  }
  EXPECT_EQ(streamed, r.text);
}

}  // namespace
}  // namespace snapvk::test
