#include "host/model/tokenizer.h"

#include <algorithm>
#include <map>
#include <queue>
#include <set>
#include <unordered_map>

#include "host/gguf/gguf.h"
#include "host/model/pretokenizer.h"
#include "host/model/unicode.h"
#include "runtime/error.h"

namespace snapvk {

namespace {

// Token attributes, as llama.cpp's llama_token_attr bits derived from the token type.
enum Attr : uint8_t {
  kAttrUndefined = 0,
  kAttrNormal = 1 << 0,
  kAttrUnknown = 1 << 1,
  kAttrControl = 1 << 2,
  kAttrUserDefined = 1 << 3,
  kAttrUnused = 1 << 4,
  kAttrByte = 1 << 5,
};

uint8_t attr_of_type(int32_t type) {
  switch (static_cast<TokenType>(type)) {
    case TokenType::Normal: return kAttrNormal;
    case TokenType::Unknown: return kAttrUnknown;
    case TokenType::Control: return kAttrControl;
    case TokenType::UserDefined: return kAttrUserDefined;
    case TokenType::Unused: return kAttrUnused;
    case TokenType::Byte: return kAttrByte;
    default: return kAttrUndefined;
  }
}

// Token texts llama.cpp takes as end-of-turn (when no eot id is given) and as end of
// generation; such tokens are also forced to be control tokens.
const std::set<std::string> kEotTexts = {"<|eot_id|>",
                                         "<|im_end|>",
                                         "<|end|>",
                                         "<end_of_turn>",
                                         "<|endoftext|>",
                                         "<|end_of_text|>",
                                         "<EOT>",
                                         "_<EOT>",
                                         "[EOT]",
                                         "<\xEF\xBD\x9C"
                                         "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
                                         "<end_of_utterance>"};
const std::set<std::string> kEogTexts = {"<|eot_id|>",
                                         "<|im_end|>",
                                         "<|end|>",
                                         "<|return|>",
                                         "<|call|>",
                                         "<|flush|>",
                                         "<|calls|>",
                                         "<end_of_turn>",
                                         "<|endoftext|>",
                                         "</s>",
                                         "<|eom_id|>",
                                         "<EOT>",
                                         "_<EOT>",
                                         "[EOT]",
                                         "[EOS]",
                                         "<|end_of_text|>",
                                         "<end_of_utterance>",
                                         "<eos>",
                                         "<turn|>",
                                         "<|tool_response>",
                                         "<\xEF\xBD\x9C"
                                         "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
                                         "[e~["};

const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's escaped space

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string_view::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out.append(to);
  }
  out.append(s.substr(pos));
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte of a "<0xNN>" token (llama.cpp's token_to_byte: strtol of text[3..5], 0 if bad).
char byte_of_token(const std::string& text) {
  if (text.size() < 5) return 0;
  const int hi = hex_digit(text[3]), lo = hex_digit(text[4]);
  if (hi < 0) return 0;
  return static_cast<char>(lo < 0 ? hi : hi * 16 + lo);
}

// A piece of the input: raw text [offset, offset + length), or a special token already found.
struct Fragment {
  int32_t token;  // -1 for raw text
  size_t offset, length;
};

// Everything the tokenizer knows, built once from the Vocab.
struct TokenizerData {
  Vocab vocab;
  bool spm = true;  // else byte-level BPE
  PreTokenizer pre = PreTokenizer::Default;
  bool ignore_merges = false;
  std::vector<uint8_t> attr;
  std::unordered_map<std::string, int32_t> token_to_id;
  std::unordered_map<std::string, int32_t> bpe_ranks;  // "left right" -> merge rank
  std::vector<int32_t> special_tokens;                 // control, user-defined, unknown; longest first
  std::set<int32_t> eog;
  int32_t byte_token[256];          // SPM byte fallback
  std::vector<std::string> pieces;  // token_to_piece(id, special = true) of every token

  explicit TokenizerData(Vocab v);

  int32_t find(const std::string& text) const {
    auto it = token_to_id.find(text);
    return it == token_to_id.end() ? -1 : it->second;
  }
  float score(int32_t id) const { return vocab.scores.empty() ? 0.0f : vocab.scores[id]; }
  std::string piece_of(int32_t id) const;
  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;
  void spm_tokenize(const std::string& text, std::vector<int32_t>& out) const;
  void bpe_tokenize(const std::string& text, std::vector<int32_t>& out) const;
};

TokenizerData::TokenizerData(Vocab v) : vocab(std::move(v)) {
  if (vocab.model == "llama") {
    spm = true;
  } else if (vocab.model == "gpt2") {
    spm = false;
    const PreTokenizerInfo info = pre_tokenizer_for(vocab.pre);
    pre = info.kind;
    ignore_merges = info.ignore_merges;
  } else {
    throw Error(ErrorKind::BadModel,
                "unsupported tokenizer model '" + vocab.model + "' (tokenizer.ggml.model; want llama or gpt2)");
  }
  const size_t n = vocab.tokens.size();
  if (n == 0) throw Error(ErrorKind::BadModel, "tokenizer vocabulary is empty (tokenizer.ggml.tokens)");
  if (n > static_cast<size_t>(INT32_MAX)) throw Error(ErrorKind::BadModel, "tokenizer vocabulary too large");
  if (vocab.merges.size() > static_cast<size_t>(INT32_MAX))  // merge ranks are int32
    throw Error(ErrorKind::BadModel,
                "tokenizer.ggml.merges has " + std::to_string(vocab.merges.size()) + " entries (at most 2^31 - 1)");
  if (!vocab.scores.empty() && vocab.scores.size() < n) {
    throw Error(ErrorKind::BadModel, "tokenizer.ggml.scores has " + std::to_string(vocab.scores.size()) +
                                         " entries for " + std::to_string(n) + " tokens");
  }
  if (!vocab.types.empty() && vocab.types.size() < n) {
    throw Error(ErrorKind::BadModel, "tokenizer.ggml.token_type has " + std::to_string(vocab.types.size()) +
                                         " entries for " + std::to_string(n) + " tokens");
  }

  attr.resize(n);
  token_to_id.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    std::string& text = vocab.tokens[i];
    if (text.empty()) text = "[EMPTY_" + std::to_string(i) + "]";  // as llama.cpp
    if (!token_to_id.emplace(text, static_cast<int32_t>(i)).second) {
      throw Error(ErrorKind::BadModel, "duplicate token in vocabulary: '" + text + "' has ids " +
                                           std::to_string(token_to_id[text]) + " and " + std::to_string(i));
    }
    attr[i] = vocab.types.empty() ? uint8_t{kAttrNormal} : attr_of_type(vocab.types[i]);
  }

  for (int32_t* id : {&vocab.bos, &vocab.eos, &vocab.eot, &vocab.unk, &vocab.pad}) {
    if (*id < 0 || static_cast<size_t>(*id) >= n) *id = -1;
  }
  if (vocab.add_bos && vocab.bos < 0)
    throw Error(ErrorKind::BadModel, "tokenizer adds BOS but has no valid bos token id");
  if (vocab.add_eos && vocab.eos < 0)
    throw Error(ErrorKind::BadModel, "tokenizer adds EOS but has no valid eos token id");

  if (!spm) {
    bpe_ranks.reserve(vocab.merges.size());
    for (size_t i = 0; i < vocab.merges.size(); ++i) {
      const std::string& m = vocab.merges[i];
      const size_t sp = m.find(' ', 1);
      const std::string key = sp == std::string::npos ? std::string(" ") : m;  // llama.cpp: ("", "")
      bpe_ranks.emplace(key, static_cast<int32_t>(i));
    }
  }

  // End-of-generation tokens, by id and by text; llama.cpp makes the latter control tokens.
  int32_t eom = -1;
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = vocab.tokens[i];
    const bool eot_like = vocab.eot < 0 && kEotTexts.count(text);
    const bool eom_like = eom < 0 && text == "<|eom_id|>";
    if (eot_like) vocab.eot = static_cast<int32_t>(i);
    if (eom_like) eom = static_cast<int32_t>(i);
    if (kEogTexts.count(text)) eog.insert(static_cast<int32_t>(i));
    if (eot_like || eom_like || kEogTexts.count(text)) attr[i] |= kAttrControl;
  }
  for (int32_t id : {vocab.eos, vocab.eot, eom}) {
    if (id >= 0) eog.insert(id);
  }

  for (size_t i = 0; i < n; ++i) {
    if (attr[i] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) special_tokens.push_back(static_cast<int32_t>(i));
  }
  std::stable_sort(special_tokens.begin(), special_tokens.end(),
                   [&](int32_t a, int32_t b) { return vocab.tokens[a].size() > vocab.tokens[b].size(); });

  // SPM byte fallback: "<0xNN>", else the byte itself as a token; llama.cpp would throw when
  // neither exists, here the unknown token stands in (or the byte is dropped).
  static const char* kHex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const std::string name = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
    int32_t id = find(name);
    if (id < 0) id = find(std::string(1, static_cast<char>(b)));
    byte_token[b] = id >= 0 ? id : vocab.unk;
  }

  pieces.reserve(n);
  for (size_t i = 0; i < n; ++i) pieces.push_back(piece_of(static_cast<int32_t>(i)));
}

// The text of a token as llama.cpp's llama_token_to_piece(special = true) renders it.
std::string TokenizerData::piece_of(int32_t id) const {
  const uint8_t a = attr[id];
  const std::string& text = vocab.tokens[id];
  if (a & (kAttrUnknown | kAttrControl | kAttrUserDefined)) return text;
  if (a & kAttrByte) return std::string(1, byte_of_token(text));
  if (!(a & kAttrNormal)) return "";  // unused and undefined tokens
  if (spm) return replace_all(text, kSpace, " ");
  // Byte-level BPE: each character stands for one byte (llama_decode_text).
  std::string out;
  for (uint32_t cp : unicode::decode_utf8(text)) {
    const int b = unicode::unicode_to_byte(cp);
    if (b >= 0) {
      out += static_cast<char>(b);
      continue;
    }
    static const char* kHex = "0123456789abcdef";
    out += "[UNK_BYTE_0x";
    for (char c : unicode::encode_utf8(cp)) {
      out += kHex[static_cast<uint8_t>(c) >> 4];
      out += kHex[static_cast<uint8_t>(c) & 15];
    }
    out += text + "]";
  }
  return out;
}

// Splits out the special tokens that occur literally in the text (tokenizer_st_partition):
// longest tokens first, each one over every raw fragment left so far, left to right.
std::vector<Fragment> TokenizerData::partition(std::string_view text, bool parse_special) const {
  std::vector<Fragment> frags;
  if (!text.empty()) frags.push_back({-1, 0, text.size()});
  for (int32_t id : special_tokens) {
    // Control and unknown tokens only when asked; user-defined ones always.
    if (!parse_special && (attr[id] & (kAttrControl | kAttrUnknown))) continue;
    const std::string& tok = vocab.tokens[id];
    std::vector<Fragment> next;
    next.reserve(frags.size());
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      const size_t end = f.offset + f.length;
      const std::string_view window = text.substr(0, end);
      size_t pos = f.offset;
      for (size_t hit; (hit = window.find(tok, pos)) != std::string_view::npos; pos = hit + tok.size()) {
        if (hit > pos) next.push_back({-1, pos, hit - pos});
        next.push_back({id, 0, 0});
      }
      if (pos < end) next.push_back({-1, pos, end - pos});
    }
    frags = std::move(next);
  }
  return frags;
}

// A run of the text in the merge loops; merged-away symbols have n == 0.
struct Symbol {
  int prev, next;
  const char* text;
  size_t n;
};

// The text split into UTF-8 characters (by lead byte, as llama.cpp: a bad sequence may cut
// short at the end), linked as a list.
std::vector<Symbol> split_symbols(const std::string& text) {
  std::vector<Symbol> symbols;
  int index = 0;
  for (size_t offs = 0; offs < text.size();) {
    const size_t n = std::min(unicode::utf8_len(text[offs]), text.size() - offs);
    Symbol sym{index - 1, 0, text.data() + offs, n};
    offs += n;
    sym.next = offs == text.size() ? -1 : index + 1;
    ++index;
    symbols.push_back(sym);
  }
  return symbols;
}

struct SpmBigram {
  int left, right;
  float score;
  size_t size;
  // Highest score first; equal scores: leftmost first.
  bool operator<(const SpmBigram& o) const { return score < o.score || (score == o.score && left > o.left); }
};

// llama.cpp's llm_tokenizer_spm_session.
class SpmSession {
 public:
  explicit SpmSession(const TokenizerData& v) : v_(v) {}

  void tokenize(const std::string& text, std::vector<int32_t>& out) {
    symbols_ = split_symbols(text);
    for (int i = 1; i < static_cast<int>(symbols_.size()); ++i) try_add_bigram(i - 1, i);
    while (!queue_.empty()) {
      const SpmBigram b = queue_.top();
      queue_.pop();
      Symbol& left = symbols_[b.left];
      Symbol& right = symbols_[b.right];
      if (left.n == 0 || right.n == 0 || left.n + right.n != b.size) continue;  // stale
      left.n += right.n;
      right.n = 0;
      left.next = right.next;
      if (right.next >= 0) symbols_[right.next].prev = b.left;
      try_add_bigram(left.prev, b.left);
      try_add_bigram(b.left, left.next);
    }
    if (symbols_.empty()) return;
    for (int i = 0; i != -1; i = symbols_[i].next) resegment(symbols_[i], out);
  }

 private:
  void try_add_bigram(int left, int right) {
    if (left == -1 || right == -1) return;
    const std::string text(symbols_[left].text, symbols_[left].n + symbols_[right].n);
    const int32_t id = v_.find(text);
    if (id < 0) return;
    queue_.push({left, right, v_.score(id), text.size()});
    rev_merge_[text] = {left, right};
  }

  // A symbol that is a token is output; otherwise undo the merge that made it, or fall
  // back to one token per byte.
  void resegment(const Symbol& sym, std::vector<int32_t>& out) {
    const std::string text(sym.text, sym.n);
    if (int32_t id = v_.find(text); id >= 0) {
      out.push_back(id);
      return;
    }
    auto it = rev_merge_.find(text);
    if (it == rev_merge_.end()) {
      for (char c : text) {
        if (int32_t id = v_.byte_token[static_cast<uint8_t>(c)]; id >= 0) out.push_back(id);
      }
      return;
    }
    resegment(symbols_[it->second.first], out);
    resegment(symbols_[it->second.second], out);
  }

  const TokenizerData& v_;
  std::vector<Symbol> symbols_;
  std::priority_queue<SpmBigram> queue_;
  std::map<std::string, std::pair<int, int>> rev_merge_;
};

struct BpeBigram {
  int left, right;
  std::string text;
  int32_t rank;
  // Lowest rank first; equal ranks: leftmost first.
  bool operator<(const BpeBigram& o) const { return rank > o.rank || (rank == o.rank && left > o.left); }
};

void TokenizerData::spm_tokenize(const std::string& text, std::vector<int32_t>& out) const {
  SpmSession(*this).tokenize(text, out);
}

// llama.cpp's llm_tokenizer_bpe_session::tokenize: merges run inside each pre-tokenizer word.
void TokenizerData::bpe_tokenize(const std::string& text, std::vector<int32_t>& out) const {
  for (const std::string& raw_word : pre_tokenize(text, pre)) {
    std::string word;
    for (char c : raw_word) word += unicode::byte_to_unicode(static_cast<uint8_t>(c));

    std::vector<Symbol> symbols;
    if (ignore_merges && find(word) >= 0) {
      symbols.push_back({-1, -1, word.data(), word.size()});
    } else {
      symbols = split_symbols(word);
    }

    std::priority_queue<BpeBigram> queue;
    auto add_bigram = [&](int left, int right) {
      if (left == -1 || right == -1) return;
      const std::string l(symbols[left].text, symbols[left].n), r(symbols[right].text, symbols[right].n);
      auto it = bpe_ranks.find(l + " " + r);
      if (it == bpe_ranks.end()) return;
      queue.push({left, right, l + r, it->second});
    };
    for (int i = 1; i < static_cast<int>(symbols.size()); ++i) add_bigram(i - 1, i);
    while (!queue.empty()) {
      const BpeBigram b = queue.top();
      queue.pop();
      Symbol& left = symbols[b.left];
      Symbol& right = symbols[b.right];
      if (left.n == 0 || right.n == 0) continue;
      if (std::string(left.text, left.n) + std::string(right.text, right.n) != b.text) continue;  // stale
      left.n += right.n;
      right.n = 0;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = b.left;
      add_bigram(left.prev, b.left);
      add_bigram(b.left, left.next);
    }

    for (const Symbol& sym : symbols) {
      if (sym.n == 0) continue;
      const std::string str(sym.text, sym.n);
      if (int32_t id = find(str); id >= 0) {
        out.push_back(id);
        continue;
      }
      // As llama.cpp: look each byte up as a one-byte token, skip those that are not.
      for (char c : str) {
        if (int32_t id = find(std::string(1, c)); id >= 0) out.push_back(id);
      }
    }
  }
}

}  // namespace

struct Tokenizer::Impl : TokenizerData {
  explicit Impl(Vocab v) : TokenizerData(std::move(v)) {}
};

Tokenizer::Tokenizer(Vocab vocab) : impl_(std::make_shared<const Impl>(std::move(vocab))) {}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  const Impl& v = *impl_;
  std::vector<int32_t> out;
  const std::vector<Fragment> frags = v.partition(text, parse_special);
  if (add_special && v.vocab.add_bos) out.push_back(v.vocab.bos);
  bool prev_special = true;  // SPM: a space prefix before the first text, and after special tokens
  for (const Fragment& f : frags) {
    if (f.token >= 0) {
      out.push_back(f.token);
      prev_special = true;
      continue;
    }
    const std::string_view piece = text.substr(f.offset, f.length);
    if (v.spm) {
      std::string s = v.vocab.add_space_prefix && prev_special ? " " : "";
      s += piece;
      v.spm_tokenize(replace_all(s, " ", kSpace), out);
    } else {
      v.bpe_tokenize(std::string(piece), out);
    }
    prev_special = false;
  }
  if (add_special && v.vocab.add_eos) out.push_back(v.vocab.eos);
  return out;
}

std::string Tokenizer::token_to_piece(int32_t id, bool special) const {
  const Impl& v = *impl_;
  if (id < 0 || id >= n_vocab()) {
    throw Error(ErrorKind::InvalidArgument, "token id " + std::to_string(id) + " is out of range (vocabulary has " +
                                                std::to_string(n_vocab()) + " tokens)");
  }
  if (!special && (v.attr[id] & (kAttrUnknown | kAttrControl))) return "";
  return v.pieces[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += token_to_piece(id);
  return out;
}

std::vector<uint32_t> Tokenizer::word_continuations(std::span<const int32_t> ids) const {
  // A letter or digit; a byte that does not start a whole UTF-8 character is part of one.
  auto word_char = [](std::string_view s, size_t i) {
    const size_t n = unicode::utf8_valid_len(s, i);
    if (n == 0) return static_cast<unsigned char>(s[i]) >= 0x80;
    const uint32_t cp = unicode::decode_utf8(s.substr(i, n)).front();
    return unicode::is_letter(cp) || unicode::is_number(cp);
  };
  std::vector<uint32_t> out(ids.size(), 0);
  bool prev_ends_word = false;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string piece = token_to_piece(ids[i]);
    if (piece.empty()) {
      prev_ends_word = false;
      continue;
    }
    out[i] = prev_ends_word && word_char(piece, 0);
    size_t last = piece.size() - 1;  // the start of the last character
    while (last > 0 && (static_cast<unsigned char>(piece[last]) & 0xC0) == 0x80) --last;
    prev_ends_word = word_char(piece, last);
  }
  return out;
}

int32_t Tokenizer::n_vocab() const { return static_cast<int32_t>(impl_->vocab.tokens.size()); }
int32_t Tokenizer::bos() const { return impl_->vocab.bos; }
int32_t Tokenizer::eos() const { return impl_->vocab.eos; }
bool Tokenizer::is_eog(int32_t id) const { return impl_->eog.count(id) > 0; }
std::vector<int32_t> Tokenizer::eog_tokens() const { return {impl_->eog.begin(), impl_->eog.end()}; }
int32_t Tokenizer::find_token(std::string_view text) const { return impl_->find(std::string(text)); }
bool Tokenizer::is_control(int32_t id) const { return id >= 0 && id < n_vocab() && (impl_->attr[id] & kAttrControl); }
bool Tokenizer::add_bos() const { return impl_->vocab.add_bos; }
const Vocab& Tokenizer::vocab() const { return impl_->vocab; }

Vocab vocab_defaults(std::string model, std::string pre) {
  Vocab v;
  v.model = std::move(model);
  v.pre = std::move(pre);
  if (v.model == "llama") {
    v.bos = 1;
    v.eos = 2;
    v.unk = 0;
    v.add_bos = true;
    v.add_space_prefix = true;
  } else if (v.model == "gpt2") {
    v.bos = 11;
    v.eos = 11;
    v.add_space_prefix = false;
    // llama.cpp turns add_bos on for its LLAMA3 pre-type (the ones that ignore merges).
    v.add_bos = pre_tokenizer_for(v.pre).ignore_merges;
  }
  return v;
}

Vocab vocab_from_gguf(const GgufFile& f) {
  Vocab v = vocab_defaults(f.require_string("tokenizer.ggml.model"), f.get_string("tokenizer.ggml.pre", "default"));
  v.tokens = f.get_string_array("tokenizer.ggml.tokens");
  v.scores = f.get_float_array("tokenizer.ggml.scores");
  v.types = f.get_int_array("tokenizer.ggml.token_type");
  v.merges = f.get_string_array("tokenizer.ggml.merges");
  const uint64_t n = v.tokens.size();
  // A defaulted id outside the vocabulary is dropped; one from the file only replaces the
  // default when it is inside (llama.cpp ignores e.g. a padding id of 0xFFFFFFFF).
  auto id = [&](const char* key, int32_t& field) {
    if (field >= 0 && static_cast<uint64_t>(field) >= n) field = -1;
    const int64_t value = f.get_int(key, -1);
    if (value >= 0 && static_cast<uint64_t>(value) < n) field = static_cast<int32_t>(value);
  };
  id("tokenizer.ggml.bos_token_id", v.bos);
  id("tokenizer.ggml.eos_token_id", v.eos);
  id("tokenizer.ggml.eot_token_id", v.eot);
  id("tokenizer.ggml.unknown_token_id", v.unk);
  id("tokenizer.ggml.padding_token_id", v.pad);
  v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", v.add_bos);
  v.add_eos = f.get_bool("tokenizer.ggml.add_eos_token", v.add_eos);
  v.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
  return v;
}

}  // namespace snapvk
