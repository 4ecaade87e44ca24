// Tokenizer tests: llama.cpp's own tokenizer vectors for a SentencePiece (Llama 2) and a
// byte-level BPE (GPT-2) vocabulary, llama2.c's prompt tokens for stories260K, round trips,
// pre-tokenizer splits, hand-built vocabularies, and bad input (a GGUF file's hostile ids and
// counts included).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/gguf/gguf.h"
#include "host/model/pretokenizer.h"
#include "host/model/tokenizer.h"
#include "host/model/unicode.h"
#include "runtime/error.h"
#include "tests/expect_error.h"
#include "tests/test_util.h"
#include "tests/tiny_llama.h"

namespace snapvk {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Shared across tests: loading the GGUF vocabularies takes a moment.
const Tokenizer& load_tokenizer(const std::string& name) {
  static std::map<std::string, Tokenizer> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    const GgufFile file = GgufFile::open(test::model_path(name));
    it = cache.emplace(name, Tokenizer(vocab_from_gguf(file))).first;
  }
  return it->second;
}

struct VocabCase {
  std::string text;
  std::vector<int32_t> ids;
};

// The .inp/.out pair of llama.cpp's test-tokenizer-0: inputs separated by
// "\n__ggml_vocab_test__\n", one line of space-separated ids per input.
std::vector<VocabCase> read_vocab_cases(const std::string& name) {
  const std::string inp = read_file(test::model_path(name + ".inp"));
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0; pos < inp.size();) {
    const size_t next = inp.find(sep, pos);
    if (next == std::string::npos) {
      texts.push_back(inp.substr(pos));
      break;
    }
    texts.push_back(inp.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::ifstream out(test::model_path(name + ".out"));
  std::vector<VocabCase> cases;
  size_t i = 0;
  for (std::string line; std::getline(out, line); ++i) {
    if (i >= texts.size()) throw std::runtime_error(name + ": more .out lines than .inp cases");
    VocabCase c{texts[i], {}};
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  if (cases.size() != texts.size()) throw std::runtime_error(name + ": .inp and .out case counts differ");
  return cases;
}

std::string ids_string(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) {
    s += ' ';
    s += std::to_string(id);
  }
  return s;
}

// Text for a failure message: control characters and backslashes escaped, the rest as is.
std::string escaped(const std::string& text) {
  std::string s;
  for (char c : text) {
    if (c == '\n')
      s += "\\n";
    else if (c == '\t')
      s += "\\t";
    else if (c == '\r')
      s += "\\r";
    else if (c == '\\')
      s += "\\\\";
    else if (static_cast<unsigned char>(c) < 0x20) {
      static const char* kHex = "0123456789abcdef";
      s += "\\x";
      s += kHex[c >> 4];
      s += kHex[c & 15];
    } else {
      s += c;
    }
  }
  return s;
}

// Every case of a vocab file's .inp/.out (read with `tokenizer_file` unless given); the
// message lists each failing case with its text.
void check_vocab_file(const std::string& name, const std::string& tokenizer_file = "") {
  const Tokenizer& tok = load_tokenizer(tokenizer_file.empty() ? name : tokenizer_file);
  const std::vector<VocabCase> cases = read_vocab_cases(name);
  ASSERT_GT(cases.size(), 30u);
  std::string failures;
  int n_failed = 0;
  for (const VocabCase& c : cases) {
    const std::vector<int32_t> got = tok.encode(c.text, /*add_special=*/false, /*parse_special=*/false);
    if (got != c.ids) {
      ++n_failed;
      failures +=
          "\n  text '" + escaped(c.text) + "'\n    expected" + ids_string(c.ids) + "\n    got     " + ids_string(got);
    }
  }
  EXPECT_EQ(n_failed, 0) << n_failed << " of " << cases.size() << " cases of " << name << " fail:" << failures;
}

// decode(encode(x)) gives x back, after `prefix` (SPM's added space).
void check_round_trip(const std::string& name, const std::string& prefix) {
  const Tokenizer& tok = load_tokenizer(name);
  std::string failures;
  for (const VocabCase& c : read_vocab_cases(name)) {
    const std::string expected = c.text.empty() ? "" : prefix + c.text;
    const std::string got = tok.decode(tok.encode(c.text, false));
    if (got != expected) failures += "\n  '" + escaped(c.text) + "' -> '" + escaped(got) + "'";
  }
  EXPECT_TRUE(failures.empty()) << "round trip fails for:" << failures;
}

TEST(TokenizerLlamaSpm, MatchesLlamaCppVectors) { check_vocab_file("ggml-vocab-llama-spm.gguf"); }
TEST(TokenizerGpt2, MatchesLlamaCppVectors) { check_vocab_file("ggml-vocab-gpt-2.gguf"); }
// Another GGUF with the Llama 2 vocabulary (no add_bos_token key): the same ids.
TEST(TokenizerLlamaSpm, TinyRandomModelVocabMatchesToo) {
  check_vocab_file("ggml-vocab-llama-spm.gguf", "random/llama-2-tiny-random.gguf");
}
TEST(TokenizerLlamaSpm, RoundTrip) { check_round_trip("ggml-vocab-llama-spm.gguf", " "); }
TEST(TokenizerGpt2, RoundTrip) { check_round_trip("ggml-vocab-gpt-2.gguf", ""); }

TEST(TokenizerLlamaSpm, LoadsSpecialTokensAndDefaults) {
  const Tokenizer& tok = load_tokenizer("ggml-vocab-llama-spm.gguf");
  EXPECT_EQ(tok.n_vocab(), 32000);
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_EQ(tok.eos(), 2);
  EXPECT_TRUE(tok.add_bos());
  EXPECT_TRUE(tok.is_eog(2));
  EXPECT_FALSE(tok.is_eog(1));
  EXPECT_EQ(tok.encode("Hello world", true), (std::vector<int32_t>{1, 15043, 3186}));
  EXPECT_EQ(tok.encode("", true), (std::vector<int32_t>{1}));
  EXPECT_EQ(tok.encode("", false), (std::vector<int32_t>{}));
}

TEST(TokenizerLlamaSpm, PiecesAndSpecialTokens) {
  const Tokenizer& tok = load_tokenizer("ggml-vocab-llama-spm.gguf");
  EXPECT_EQ(tok.token_to_piece(15043), " Hello");
  EXPECT_EQ(tok.token_to_piece(13), "\n");  // <0x0A>
  EXPECT_EQ(tok.token_to_piece(1), "");     // control: rendered only on request
  EXPECT_EQ(tok.token_to_piece(1, /*special=*/true), "<s>");
  EXPECT_EQ(tok.token_to_piece(0), "");  // unknown
  // Control tokens in the text are parsed only with parse_special; a space prefix follows them.
  EXPECT_EQ(tok.encode("<s>Hello</s>", false, /*parse_special=*/true), (std::vector<int32_t>{1, 15043, 2}));
  for (int32_t id : tok.encode("<s>Hello</s>", false, /*parse_special=*/false)) {
    EXPECT_NE(id, 1);
    EXPECT_NE(id, 2);
  }
}

TEST(TokenizerGpt2, SpecialTokens) {
  const Tokenizer& tok = load_tokenizer("ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(tok.n_vocab(), 50257);
  EXPECT_EQ(tok.bos(), 50256);
  EXPECT_EQ(tok.eos(), 50256);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_TRUE(tok.is_eog(50256));
  EXPECT_EQ(tok.encode("Hello<|endoftext|>", false, /*parse_special=*/true), (std::vector<int32_t>{15496, 50256}));
  EXPECT_NE(tok.encode("Hello<|endoftext|>", false, false).back(), 50256);
  EXPECT_EQ(tok.token_to_piece(18435), " Hello");
  EXPECT_EQ(tok.token_to_piece(50256), "");
  EXPECT_EQ(tok.token_to_piece(50256, true), "<|endoftext|>");
}

// ---- stories260K against llama2.c ----

// (prompt, prompt_tokens) pairs of llama2c-stories260K-greedy-tokens.txt: the runs' prompts
// (`prompt: "..."`) and the extra vectors (`text_json: "..."`).
std::vector<VocabCase> read_llama2c_prompts() {
  std::ifstream in(test::model_path("reference/llama2c-stories260K-greedy-tokens.txt"));
  std::vector<VocabCase> cases;
  std::string text;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("prompt: ", 0) == 0 || line.rfind("text_json: ", 0) == 0) {
      text = nlohmann::json::parse(line.substr(line.find(' ') + 1)).get<std::string>();  // a JSON string
    } else if (line.rfind("prompt_tokens", 0) == 0) {
      VocabCase c{text, {}};
      std::istringstream ids(line.substr(line.find(':') + 1));
      for (int32_t id; ids >> id;) c.ids.push_back(id);
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

TEST(TokenizerStories260K, MatchesLlama2cPromptTokens) {
  const Tokenizer& tok = load_tokenizer("stories260K.gguf");
  EXPECT_EQ(tok.n_vocab(), 512);
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_TRUE(tok.add_bos());  // no add_bos_token key: llama.cpp's SPM default
  const std::vector<VocabCase> cases = read_llama2c_prompts();
  ASSERT_EQ(cases.size(), 16u);  // 8 runs + 8 extra vectors
  std::string failures;
  for (const VocabCase& c : cases) {
    const std::vector<int32_t> got = tok.encode(c.text, /*add_special=*/true);
    if (got != c.ids) {
      failures += "\n  '" + escaped(c.text) + "': expected" + ids_string(c.ids) + ", got" + ids_string(got);
    }
  }
  EXPECT_TRUE(failures.empty()) << failures;
}

TEST(TokenizerStories260K, DecodesPrompt) {
  const Tokenizer& tok = load_tokenizer("stories260K.gguf");
  EXPECT_EQ(tok.decode({1, 403, 407, 261, 378}), " Once upon a time");
  const std::string text = "na\xC3\xAFve caf\xC3\xA9 \xE6\x97\xA5";
  EXPECT_EQ(tok.decode(tok.encode(text, true)), " " + text);
}

// ---- bad input ----

TEST(TokenizerBadInput, DecodeThrowsNamingTheId) {
  const Tokenizer& tok = load_tokenizer("stories260K.gguf");
  for (int32_t bad : {512, -1, 1000000}) {
    try {
      tok.decode({1, 403, bad});
      ADD_FAILURE() << "no exception for id " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(tok.token_to_piece(512), Error);
}

const char* const kInvalidUtf8[] = {
    "\xFF",
    ("a\xFE"
     "b"),
    "\x80\x80",
    "\xE2\x96",
    "x\xE2\x96",
    "\xC3",
    "\xF0\x9F\x98",
    "\xC0\xAF",
    "\xF7\xBF\xBF\xBF",
    "\xED\xA0\x80",
    "ok \xF8\x88\x80\x80\x80 ok",
    "\xE6\x97\xA5\xE6",
};

TEST(TokenizerBadInput, InvalidUtf8SpmKeepsTheBytes) {
  for (const char* name : {"ggml-vocab-llama-spm.gguf", "stories260K.gguf"}) {
    const Tokenizer& tok = load_tokenizer(name);
    for (const char* text : kInvalidUtf8) {
      // SPM falls back to byte tokens, so even invalid UTF-8 comes back unchanged.
      EXPECT_EQ(tok.decode(tok.encode(text, false)), std::string(" ") + text) << name;
    }
  }
}

TEST(TokenizerBadInput, InvalidUtf8BpeBecomesReplacementChars) {
  const Tokenizer& tok = load_tokenizer("ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(tok.decode(tok.encode("a\xFE"
                                  "b",
                                  false)),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(tok.decode(tok.encode("\xE2\x96", false)), "\xEF\xBF\xBD\xEF\xBF\xBD");
  for (const char* text : kInvalidUtf8) EXPECT_FALSE(tok.encode(text, false).empty());
}

// Random bytes, mostly not UTF-8: SPM gives them back unchanged, byte-level BPE gives back
// the text with each invalid byte replaced by U+FFFD. One SPM wrinkle, llama.cpp's too: a
// truncated multi-byte sequence can take in bytes of the U+2581 that the next space became,
// which then come back as U+2581 rather than a space; hence the comparison modulo U+2581.
std::string unescape_spaces(const std::string& s) {
  std::string out;
  for (size_t pos = 0, hit;; pos = hit + 3) {
    hit = s.find("\xE2\x96\x81", pos);
    out.append(s, pos, hit == std::string::npos ? std::string::npos : hit - pos);
    if (hit == std::string::npos) return out;
    out += ' ';
  }
}

TEST(TokenizerBadInput, RandomBytesRoundTrip) {
  const Tokenizer& spm = load_tokenizer("ggml-vocab-llama-spm.gguf");
  const Tokenizer& bpe = load_tokenizer("ggml-vocab-gpt-2.gguf");
  std::mt19937 rng(1234);
  const std::string alphabet = std::string("ab '\n\xC3\xA9\xE6\x97\xA5\xF0\x9F\x98\x80") + '\0';
  for (int iter = 0; iter < 500; ++iter) {
    std::string text;
    const int n = static_cast<int>(rng() % 24);
    for (int i = 0; i < n; ++i) {
      // Half the time any byte, else a byte of a small alphabet with valid sequences in it.
      text += rng() % 2 ? static_cast<char>(rng() % 256) : alphabet[rng() % alphabet.size()];
    }
    const std::string spm_expected = text.empty() ? "" : " " + text;
    EXPECT_EQ(unescape_spaces(spm.decode(spm.encode(text, false))), unescape_spaces(spm_expected)) << escaped(text);
    std::string replaced;
    for (uint32_t cp : unicode::decode_utf8(text)) unicode::append_utf8(replaced, cp);
    EXPECT_EQ(bpe.decode(bpe.encode(text, false)), replaced) << escaped(text);
  }
}

// The vocabulary's ids and array lengths from a hostile GGUF file (issue 7).
using test::expect_error;
using test::kU32Max;
using test::kU64Max;
using test::TinyGguf;

TEST(TokenizerBadInput, VocabularyIdsAndCountsFromGguf) {
  TinyGguf g;
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

// ---- pre-tokenizers ----

using Words = std::vector<std::string>;

TEST(TokenizerPreTokenizer, Gpt2) {
  EXPECT_EQ(pre_tokenize("Hello, y'all! How are you", PreTokenizer::Gpt2),
            (Words{"Hello", ",", " y", "'", "all", "!", " How", " are", " you"}));
  EXPECT_EQ(pre_tokenize("   Hello", PreTokenizer::Gpt2), (Words{"  ", " Hello"}));
  EXPECT_EQ(pre_tokenize("I'VE 3333 it's", PreTokenizer::Gpt2), (Words{"I", "'", "VE", " 3333", " it", "'s"}));
  EXPECT_EQ(pre_tokenize("a  \n", PreTokenizer::Gpt2), (Words{"a", "  \n"}));
  EXPECT_EQ(pre_tokenize("", PreTokenizer::Gpt2), (Words{}));
}

TEST(TokenizerPreTokenizer, Llama3AndQwen2) {
  EXPECT_EQ(pre_tokenize("I'VE 33333 it's", PreTokenizer::Llama3), (Words{"I", "'VE", " ", "333", "33", " it", "'s"}));
  EXPECT_EQ(pre_tokenize("\n\n  x", PreTokenizer::Llama3), (Words{"\n\n", " ", " x"}));
  EXPECT_EQ(pre_tokenize("Hello, y'all!\n", PreTokenizer::Llama3), (Words{"Hello", ",", " y", "'all", "!\n"}));
  EXPECT_EQ(pre_tokenize("\xE6\x88\x91\xE6\x83\xB3"
                         "apple 1314151",
                         PreTokenizer::Llama3),
            (Words{"\xE6\x88\x91\xE6\x83\xB3"
                   "apple",
                   " ", "131", "415", "1"}));
  EXPECT_EQ(pre_tokenize("x 3333", PreTokenizer::Qwen2), (Words{"x", " ", "3", "3", "3", "3"}));
}

TEST(TokenizerPreTokenizer, DefaultAndStarCoderChains) {
  EXPECT_EQ(pre_tokenize("a+=b 12345", PreTokenizer::Default), (Words{"a", "+=", "b", " ", "123", "45"}));
  EXPECT_EQ(pre_tokenize("a 12", PreTokenizer::StarCoder), (Words{"a", " ", "1", "2"}));
}

TEST(TokenizerPreTokenizer, NamesAndInvalidUtf8) {
  EXPECT_EQ(pre_tokenizer_for("llama-bpe").kind, PreTokenizer::Llama3);
  EXPECT_TRUE(pre_tokenizer_for("llama3").ignore_merges);
  EXPECT_EQ(pre_tokenizer_for("qwen2").kind, PreTokenizer::Qwen2);
  EXPECT_EQ(pre_tokenizer_for("gpt-2").kind, PreTokenizer::Gpt2);
  EXPECT_EQ(pre_tokenizer_for("").kind, PreTokenizer::Default);
  EXPECT_THROW(pre_tokenizer_for("no-such-pre"), Error);
  EXPECT_EQ(pre_tokenize("a\xFF", PreTokenizer::Llama3), (Words{"a", "\xEF\xBF\xBD"}));
}

// ---- hand-built vocabularies ----

// A tiny SPM vocabulary: <unk> <s> </s>, the 256 byte tokens, then a few pieces.
Vocab tiny_spm() {
  Vocab v = vocab_defaults("llama");
  auto add = [&](std::string text, TokenType type, float score = 0.0f) {
    v.tokens.push_back(std::move(text));
    v.types.push_back(static_cast<int32_t>(type));
    v.scores.push_back(score);
  };
  add("<unk>", TokenType::Unknown);
  add("<s>", TokenType::Control);
  add("</s>", TokenType::Control);
  static const char* kHex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) add(std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">", TokenType::Byte);
  add("\xE2\x96\x81", TokenType::Normal, -1.0f);  // 259 ▁
  add("a", TokenType::Normal, -2.0f);             // 260
  add("b", TokenType::Normal, -3.0f);             // 261
  add("ab", TokenType::Normal, -4.0f);            // 262
  add("\xE2\x96\x81"
      "ab",
      TokenType::Normal, -5.0f);          // 263 ▁ab
  add("<user>", TokenType::UserDefined);  // 264
  add("\xE2\x96\x81"
      "a",
      TokenType::Normal, -10.0f);  // 265 ▁a (loses to ab)
  return v;
}

TEST(TokenizerHandBuilt, SpmMergesByScoreAndFallsBackToBytes) {
  const Tokenizer tok(tiny_spm());
  EXPECT_EQ(tok.encode("ab", false), (std::vector<int32_t>{263}));
  EXPECT_EQ(tok.encode("ab", true), (std::vector<int32_t>{1, 263}));
  EXPECT_EQ(tok.encode("abc", false), (std::vector<int32_t>{263, 'c' + 3}));
  EXPECT_EQ(tok.encode("aa", false), (std::vector<int32_t>{265, 260}));
  // User-defined tokens are split out even without parse_special; control tokens only with it.
  EXPECT_EQ(tok.encode("ab<user>ab", false), (std::vector<int32_t>{263, 264, 263}));
  EXPECT_EQ(tok.encode("</s>", false, true), (std::vector<int32_t>{2}));
  EXPECT_EQ(tok.decode(tok.encode("ab<user>\xC3\xA9", false)), " ab<user> \xC3\xA9");
  EXPECT_TRUE(tok.is_eog(2));  // "</s>" is an EOG text, and the eos
}

TEST(TokenizerHandBuilt, SpmOptions) {
  Vocab v = tiny_spm();
  v.add_space_prefix = false;
  v.add_eos = true;
  const Tokenizer tok(std::move(v));
  EXPECT_EQ(tok.encode("ab", true), (std::vector<int32_t>{1, 262, 2}));
  EXPECT_EQ(tok.encode("ab", false), (std::vector<int32_t>{262}));
}

TEST(TokenizerHandBuilt, BpeMergesByRank) {
  Vocab v = vocab_defaults("gpt2", "gpt-2");
  v.tokens = {"a",
              "b",
              "c",
              "\xC4\xA0",
              "ab",
              "bc",
              "\xC4\xA0"
              "a",
              "abc",
              "<|endoftext|>"};
  v.merges = {"b c", "a b", "\xC4\xA0 a", "a bc"};
  v.bos = v.eos = 8;
  const Tokenizer tok(std::move(v));
  EXPECT_TRUE(tok.is_control(8));                                  // forced: an end-of-generation text
  EXPECT_EQ(tok.encode("abc", false), (std::vector<int32_t>{7}));  // b c, then a bc
  EXPECT_EQ(tok.encode("ab a", false), (std::vector<int32_t>{4, 6}));
  EXPECT_EQ(tok.encode("cab", false), (std::vector<int32_t>{2, 4}));
  EXPECT_EQ(tok.decode({4, 6, 2}), "ab ac");
}

TEST(TokenizerHandBuilt, RejectsBadVocabularies) {
  Vocab dup = tiny_spm();
  dup.tokens[265] = "a";  // "▁a" becomes a second "a"
  EXPECT_THROW(Tokenizer{dup}, Error);
  Vocab unknown = tiny_spm();
  unknown.model = "bert";
  EXPECT_THROW(Tokenizer{unknown}, Error);
  Vocab short_scores = tiny_spm();
  short_scores.scores.resize(10);
  EXPECT_THROW(Tokenizer{short_scores}, Error);
  Vocab no_bos = tiny_spm();
  no_bos.bos = -1;
  EXPECT_THROW(Tokenizer{no_bos}, Error);
}

// Word continuations group tokens into the words and numbers of the text, whatever the
// tokenizer: SentencePiece, GPT-2's byte-level BPE, and SmolLM2's (digits one token each).
TEST(TokenizerWords, ContinuationsGroupTokensIntoWordsAndNumbers) {
  const std::string text = "The secret number is 99360. Internationalization, na\xc3\xafve caf\xc3\xa9 42x!";
  const std::vector<std::string> want = {"The", "secret", "number", "is", "99360", "Internationalization",
                                         "na\xc3\xafve", "caf\xc3\xa9", "42x"};
  for (const char* file : {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"}) {
    const Tokenizer& tok = load_tokenizer(file);
    const std::vector<int32_t> ids = tok.encode(text, true);
    const std::vector<uint32_t> cont = tok.word_continuations(ids);
    ASSERT_EQ(cont.size(), ids.size());
    // runs of tokens, each starting where cont is 0; the runs that hold a letter or digit
    std::vector<std::string> words;
    std::string run;
    auto flush = [&] {
      const size_t a = run.find_first_not_of(' ');
      const std::string w = a == std::string::npos ? "" : run.substr(a);
      if (std::any_of(w.begin(), w.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); }))
        words.push_back(w);
      run.clear();
    };
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!cont[i]) flush();
      run += tok.token_to_piece(ids[i]);
    }
    flush();
    EXPECT_EQ(words, want) << file;
  }
}

}  // namespace
}  // namespace snapvk
