#include "host/model/pretokenizer.h"

#include <cstdint>
#include <functional>

#include "host/model/unicode.h"
#include "runtime/error.h"

namespace snapvk {

namespace {

// Per-code-point class bits: the category flags plus whitespace. 0 means "outside the
// fragment", which is what llama.cpp's scanners see past either end of a fragment.
using Flags = uint16_t;
constexpr Flags kWs = 0x100;
constexpr Flags kL = unicode::kLetter;
constexpr Flags kN = unicode::kNumber;
constexpr uint32_t kOutOfRange = 0xFFFFFFFF;

// The text being split: code points, their flags, and the current fragmentation, kept
// as fragment lengths in code points (llama.cpp's bpe_offsets).
struct Text {
  std::vector<uint32_t> cpts;
  std::vector<Flags> flags;
  std::vector<size_t> lengths;
};

// A view of one fragment [ini, end) for the scanners, with llama.cpp's accessors.
struct Fragment {
  const Text& text;
  size_t ini, end;
  std::vector<size_t>& out;
  size_t prev_end;

  uint32_t cpt(size_t pos) const { return pos >= ini && pos < end ? text.cpts[pos] : kOutOfRange; }
  Flags flags(size_t pos) const { return pos >= ini && pos < end ? text.flags[pos] : 0; }
  // Ends the current word at `to`; returns its length (0 words are dropped).
  size_t add(size_t to) {
    const size_t len = to - prev_end;
    if (len > 0) out.push_back(len);
    prev_end = to;
    return len;
  }
};

bool is_cr_or_lf(uint32_t c) { return c == '\r' || c == '\n'; }
uint32_t ascii_lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// Length of a contraction ('s 't 'm 'd 're 've 'll) at pos, or 0. The case-insensitive form
// lower-cases with ASCII rules only, which equals llama.cpp's unicode_tolower here: no
// non-ASCII code point lower-cases to one of these letters (checked by gen_unicode_tables.py).
size_t contraction_at(const Fragment& f, size_t pos, bool ignore_case) {
  if (f.cpt(pos) != '\'' || pos + 1 >= f.end) return 0;
  auto lower = [&](size_t p) { return ignore_case ? ascii_lower(f.cpt(p)) : f.cpt(p); };
  const uint32_t c1 = lower(pos + 1);
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (pos + 2 >= f.end) return 0;
  const uint32_t c2 = lower(pos + 2);
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

// Not whitespace, letter or number, but inside the fragment: [^\s\p{L}\p{N}].
bool is_other(Flags fl) { return !(fl & (kWs | kL | kN)) && fl != 0; }

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (llama.cpp's unicode_regex_split_custom_gpt2, step for step).
void scan_gpt2(Fragment& f) {
  for (size_t pos = f.ini; pos < f.end;) {
    const uint32_t cpt = f.cpt(pos);
    if (size_t n = contraction_at(f, pos, /*ignore_case=*/false)) {
      pos += f.add(pos + n);
      continue;
    }
    Flags fl2 = cpt == ' ' ? f.flags(pos + 1) : f.flags(pos);
    if (fl2 & kL) {  // ' ?\p{L}+'
      pos += (cpt == ' ');
      while (fl2 & kL) fl2 = f.flags(++pos);
      f.add(pos);
      continue;
    }
    if (fl2 & kN) {  // ' ?\p{N}+'
      pos += (cpt == ' ');
      while (fl2 & kN) fl2 = f.flags(++pos);
      f.add(pos);
      continue;
    }
    if (is_other(fl2)) {  // ' ?[^\s\p{L}\p{N}]+'
      pos += (cpt == ' ');
      while (is_other(fl2)) fl2 = f.flags(++pos);
      f.add(pos);
      continue;
    }
    size_t n_ws = 0;
    while (f.flags(pos + n_ws) & kWs) ++n_ws;
    if (n_ws > 1 && f.cpt(pos + n_ws) != kOutOfRange) {  // '\s+(?!\S)': leave one for the next word
      pos += n_ws - 1;
      f.add(pos);
      continue;
    }
    if (n_ws > 0) {  // '\s+'
      pos += n_ws;
      f.add(pos);
      continue;
    }
    f.add(++pos);  // no match: a word of one code point
  }
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,G}| ?[^\s\p{L}\p{N}]+[\r\n]*
//   |\s*[\r\n]+|\s+(?!\S)|\s+
// with G = 3 for Llama-3 (llama.cpp's unicode_regex_split_custom_llama3) and G = 1 for Qwen2.
void scan_llama3(Fragment& f, size_t digit_group) {
  for (size_t pos = f.ini; pos < f.end;) {
    const uint32_t cpt = f.cpt(pos);
    const Flags fl = f.flags(pos);
    if (size_t n = contraction_at(f, pos, /*ignore_case=*/true)) {
      pos += f.add(pos + n);
      continue;
    }
    if (!(is_cr_or_lf(cpt) || (fl & kN)) && ((fl & kL) || (f.flags(pos + 1) & kL))) {
      ++pos;  // '[^\r\n\p{L}\p{N}]?\p{L}+': the optional lead, or the first letter
      while (f.flags(pos) & kL) ++pos;
      f.add(pos);
      continue;
    }
    if (fl & kN) {  // '\p{N}{1,G}'
      size_t start = pos;
      while (f.flags(pos) & kN) {
        if (++pos - start >= digit_group) {
          f.add(pos);
          start = pos;
        }
      }
      f.add(pos);
      continue;
    }
    Flags fl2 = cpt == ' ' ? f.flags(pos + 1) : fl;
    if (!(fl2 & (kWs | kL | kN)) && fl != 0) {  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
      pos += (cpt == ' ');
      while (is_other(fl2)) fl2 = f.flags(++pos);
      while (is_cr_or_lf(f.cpt(pos))) ++pos;
      f.add(pos);
      continue;
    }
    size_t n_ws = 0;
    size_t last_cr_lf_end = 0;
    while (f.flags(pos + n_ws) & kWs) {
      if (is_cr_or_lf(f.cpt(pos + n_ws))) last_cr_lf_end = pos + n_ws + 1;
      ++n_ws;
    }
    if (last_cr_lf_end > 0) {  // '\s*[\r\n]+'
      pos = last_cr_lf_end;
      f.add(pos);
      continue;
    }
    if (n_ws > 1 && f.cpt(pos + n_ws) != kOutOfRange) {  // '\s+(?!\S)'
      pos += n_ws - 1;
      f.add(pos);
      continue;
    }
    if (n_ws > 0) {  // '\s+'
      pos += n_ws;
      f.add(pos);
      continue;
    }
    f.add(++pos);
  }
}

// Splits every fragment with a scanner that tiles it into words.
void refine(Text& t, const std::function<void(Fragment&)>& scan) {
  std::vector<size_t> out;
  out.reserve(t.lengths.size());
  size_t start = 0;
  for (size_t len : t.lengths) {
    Fragment f{t, start, start + len, out, start};
    scan(f);
    start += len;
  }
  t.lengths = std::move(out);
}

// Splits every fragment the way std::regex_iterator does for a pattern that never matches
// empty: matches and the gaps between them all become fragments. `match(f, pos)` is the
// length of the pattern's match starting at pos (0 for none).
void refine_by_matches(Text& t, const std::function<size_t(const Fragment&, size_t)>& match) {
  refine(t, [&](Fragment& f) {
    size_t pos = f.ini;
    while (pos < f.end) {
      if (size_t n = match(f, pos)) {
        f.add(pos);  // the gap before the match, if any
        pos += n;
        f.add(pos);
      } else {
        ++pos;
      }
    }
    f.add(f.end);
  });
}

size_t run_length(const Fragment& f, size_t pos, bool (*pred)(uint32_t)) {
  size_t n = 0;
  while (pos + n < f.end && pred(f.cpt(pos + n))) ++n;
  return n;
}

// [\p{P}\$\+<=>\^~\|]
bool is_default_punct(uint32_t c) {
  switch (c) {
    case '$':
    case '+':
    case '<':
    case '=':
    case '>':
    case '^':
    case '~':
    case '|': return true;
    default: return unicode::is_punctuation(c);
  }
}
bool is_ascii_digit(uint32_t c) { return c >= '0' && c <= '9'; }

void split(Text& t, PreTokenizer kind) {
  switch (kind) {
    case PreTokenizer::Default:
      refine_by_matches(t, [](const Fragment& f, size_t pos) { return run_length(f, pos, is_default_punct); });
      refine(t, scan_gpt2);
      refine_by_matches(t, [](const Fragment& f, size_t pos) { return run_length(f, pos, unicode::is_number); });
      refine_by_matches(t, [](const Fragment& f, size_t pos) -> size_t {
        return run_length(f, pos, is_ascii_digit) >= 3 ? 3 : 0;  // [0-9][0-9][0-9]
      });
      break;
    case PreTokenizer::Gpt2: refine(t, scan_gpt2); break;
    case PreTokenizer::Llama3: refine(t, [](Fragment& f) { scan_llama3(f, 3); }); break;
    case PreTokenizer::Qwen2: refine(t, [](Fragment& f) { scan_llama3(f, 1); }); break;
    case PreTokenizer::StarCoder:
      refine_by_matches(t, [](const Fragment& f, size_t pos) -> size_t { return (f.flags(pos) & kN) ? 1 : 0; });
      refine(t, scan_gpt2);
      break;
  }
}

bool one_of(std::string_view s, std::initializer_list<std::string_view> names) {
  for (std::string_view n : names) {
    if (s == n) return true;
  }
  return false;
}

}  // namespace

PreTokenizerInfo pre_tokenizer_for(std::string_view pre) {
  // Names and grouping as in llama.cpp's llama_vocab::impl::load.
  if (pre.empty() || pre == "default") return {PreTokenizer::Default, false};
  if (one_of(pre, {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                   "jina-v5-nano"})) {
    return {PreTokenizer::Llama3, true};
  }
  if (one_of(pre, {"dbrx", "smaug-bpe"})) return {PreTokenizer::Llama3, false};
  if (one_of(pre, {"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
                   "modern-bert", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4"})) {
    return {PreTokenizer::Gpt2, false};
  }
  if (one_of(pre, {"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open"})) {
    return {PreTokenizer::Qwen2, false};
  }
  if (one_of(pre, {"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"})) {
    return {PreTokenizer::StarCoder, false};
  }
  throw Error(ErrorKind::BadModel, "unsupported pre-tokenizer '" + std::string(pre) + "' (tokenizer.ggml.pre)");
}

std::vector<std::string> pre_tokenize(std::string_view text, PreTokenizer kind) {
  Text t;
  t.cpts = unicode::decode_utf8(text);
  t.flags.resize(t.cpts.size());
  for (size_t i = 0; i < t.cpts.size(); ++i) {
    t.flags[i] = unicode::category(t.cpts[i]) | (unicode::is_whitespace(t.cpts[i]) ? kWs : 0);
  }
  if (!t.cpts.empty()) t.lengths.push_back(t.cpts.size());
  split(t, kind);

  std::vector<std::string> words;
  words.reserve(t.lengths.size());
  size_t start = 0;
  for (size_t len : t.lengths) {
    std::string& w = words.emplace_back();
    for (size_t i = start; i < start + len; ++i) unicode::append_utf8(w, t.cpts[i]);
    start += len;
  }
  return words;
}

}  // namespace snapvk
