// The SentencePiece-style vocabulary of synthetic models (host/report/synth.h: synth_vocab).
#include <cstdio>
#include <string_view>
#include <unordered_set>

#include "host/model/tokenizer.h"
#include "host/report/synth.h"
#include "runtime/error.h"

namespace snapvk {

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's escaped space

// Pieces after "▁": single characters, most frequent first, so that even a small vocabulary
// covers common letters before it runs out.
constexpr std::string_view kChars = "etaoinshrdlcumwfgypbvkjxqz.,'!?";
constexpr std::string_view kMoreChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\"#$%&()*+-/:;<=>@[\\]^_`{|}~";

// Words that start with a space ("▁the"), roughly by frequency in English prose, including the
// ones of the prompts tests and benchmarks use ("Once upon a time ...").
constexpr std::string_view kWords[] = {
    "the",    "a",       "and",      "to",      "of",     "was",    "in",     "he",    "she",   "it",    "Once",
    "upon",   "time",    "there",    "little",  "girl",   "boy",    "named",  "Lily",  "Tim",   "Tom",   "Sue",
    "Ben",    "Max",     "with",     "her",     "his",    "they",   "The",    "She",   "He",    "They",  "It",
    "One",    "day",     "big",      "red",     "ball",   "dog",    "cat",    "ran",   "to",    "that",  "for",
    "on",     "you",     "is",       "said",    "had",    "were",   "be",     "as",    "at",    "but",   "not",
    "this",   "all",     "so",       "very",    "happy",  "play",   "played", "went",  "saw",   "mom",   "dad",
    "friend", "friends", "tree",     "park",    "house",  "wanted", "loved",  "liked", "go",    "see",   "can",
    "do",     "did",     "what",     "from",    "up",     "out",    "then",   "when",  "one",   "an",    "have",
    "are",    "we",      "me",       "my",      "your",   "him",    "them",   "their", "our",   "would", "could",
    "will",   "about",   "into",     "after",   "again",  "too",    "also",   "just",  "like",  "some",  "no",
    "yes",    "sun",     "sky",      "water",   "bird",   "fish",   "car",    "toy",   "book",  "box",   "home",
    "sad",    "good",    "new",      "old",     "many",   "long",   "small",  "hot",   "cold",  "fast",  "slow",
    "look",   "looked",  "came",     "come",    "made",   "make",   "found",  "find",  "took",  "take",  "gave",
    "give",   "help",    "helped",   "thought", "know",   "knew",   "felt",   "feel",  "time",  "way",   "people",
    "world",  "year",    "years",    "because", "where",  "how",    "why",    "who",   "which", "while", "than",
    "only",   "other",   "more",     "most",    "first",  "last",   "next",   "down",  "over",  "under", "through",
    "back",   "here",    "now",      "never",   "always", "every",  "each",   "both",  "these", "those", "such",
    "own",    "same",    "well",     "much",    "any",    "been",   "being",  "has",   "does",  "done",  "get",
    "got",    "say",     "says",     "think",   "want",   "need",   "use",    "used",  "work",  "life",  "man",
    "woman",  "child",   "children", "hand",    "eyes",   "head",   "face",   "door",  "room",  "night", "morning",
    "school", "story",   "end",      "The",     "In",     "A",      "I",      "If",    "When",  "But",   "And",
    "This",   "We",      "You",      "What",    "There",  "Then",   "After",  "Mom",   "Dad",   "Hello", "Yes",
    "No",
};

// Pieces inside words (no "▁"): common suffixes and stems, so unknown words split sensibly.
constexpr std::string_view kSubwords[] = {
    "ed", "ing", "er",  "ly",   "es",   "s",    "y",   "en",  "on",  "an",   "in",  "re",  "st", "le",  "al",
    "ar", "or",  "ion", "tion", "ment", "ness", "ful", "est", "ous", "able", "ity", "ive", "ic", "ist", "ers",
    "th", "ch",  "sh",  "ll",   "ee",   "oo",   "ou",  "ow",  "ay",  "ck",   "ng",  "nt",  "nd",
};

struct Builder {
  SynthVocab& v;
  uint32_t n;
  std::unordered_set<std::string> seen;
  bool full() const { return v.tokens.size() >= n; }
  void add(const std::string& text, TokenType type, float score) {
    if (full() || !seen.insert(text).second) return;
    v.tokens.push_back(text);
    v.scores.push_back(score);
    v.types.push_back(static_cast<int32_t>(type));
  }
  // A normal piece; its score falls with its id, so earlier (commoner) pieces merge first.
  void piece(const std::string& text) { add(text, TokenType::Normal, -float(v.tokens.size())); }
  // `text` and every prefix of it that ends on a character boundary, shortest first:
  // SentencePiece only merges two pieces whose concatenation is itself a piece.
  void chain(const std::string& text) {
    for (size_t i = 1; i <= text.size(); ++i)
      if (i == text.size() || (static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) piece(text.substr(0, i));
  }
};

}  // namespace

SynthVocab synth_vocab(uint32_t n_vocab) {
  if (n_vocab < kSynthMinVocab)
    throw Error(ErrorKind::InvalidArgument, "vocabulary of " + std::to_string(n_vocab) +
                                                " entries is too small (at least " + std::to_string(kSynthMinVocab) +
                                                ": 3 special tokens, 256 byte tokens and a few pieces)");
  SynthVocab v;
  v.tokens.reserve(n_vocab);
  Builder b{v, n_vocab, {}};
  b.add("<unk>", TokenType::Unknown, 0.0f);
  b.add("<s>", TokenType::Control, 0.0f);
  b.add("</s>", TokenType::Control, 0.0f);
  for (int i = 0; i < 256; ++i) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", i);
    b.add(name, TokenType::Byte, 0.0f);
  }
  b.piece(std::string(kSpace));
  for (char c : kChars) b.piece(std::string(1, c));
  for (std::string_view w : kWords) b.chain(std::string(kSpace) + std::string(w));
  for (char c : kMoreChars) b.piece(std::string(1, c));
  for (std::string_view w : kSubwords) b.chain(std::string(w));
  for (uint32_t i = 0; !b.full(); ++i) b.piece(std::string(kSpace) + "w" + std::to_string(i));
  return v;
}

}  // namespace snapvk
