#pragma once
// UTF-8 and Unicode helpers for the tokenizer, following llama.cpp's src/unicode.cpp:
// the same code point decoding (invalid bytes become U+FFFD), the same general-category
// flags and whitespace set, and GPT-2's byte <-> unicode mapping.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace snapvk::unicode {

// Category flags (the low byte of llama.cpp's unicode_cpt_flags). Each code point has one.
enum : uint8_t {
  kUndefined = 0x01,    // unassigned (Cn), or beyond U+10FFFF
  kNumber = 0x02,       // \p{N}
  kLetter = 0x04,       // \p{L}
  kSeparator = 0x08,    // \p{Z}
  kMark = 0x10,         // \p{M}
  kPunctuation = 0x20,  // \p{P}
  kSymbol = 0x40,       // \p{S}
  kControl = 0x80,      // \p{C} other than Cn
};

uint8_t category(uint32_t cp);
inline bool is_letter(uint32_t cp) { return category(cp) & kLetter; }
inline bool is_number(uint32_t cp) { return category(cp) & kNumber; }
inline bool is_punctuation(uint32_t cp) { return category(cp) & kPunctuation; }
bool is_whitespace(uint32_t cp);  // Unicode White_Space (what \s means to llama.cpp)

// Length of the UTF-8 sequence a lead byte announces, from its top four bits (1 for
// continuation bytes); the length llama.cpp's SPM and BPE merge loops step by.
size_t utf8_len(char lead);

// Length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong forms, surrogates
// or code points past U+10FFFF), or 0 if there is none.
size_t utf8_valid_len(std::string_view s, size_t i);

// Code points of a UTF-8 string; each byte that does not start a well-formed sequence
// becomes one U+FFFD and decoding resumes at the next byte (llama.cpp's unicode_cpts_from_utf8).
std::vector<uint32_t> decode_utf8(std::string_view text);

// Appends the UTF-8 encoding of cp; values past U+10FFFF are written as U+FFFD.
void append_utf8(std::string& out, uint32_t cp);
std::string encode_utf8(uint32_t cp);

// GPT-2 byte-level BPE alphabet: each byte maps to one printable code point (as UTF-8).
const std::string& byte_to_unicode(uint8_t byte);
// The byte a code point of that alphabet stands for, or -1 when it is not one of the 256.
int unicode_to_byte(uint32_t cp);

namespace detail {  // the generated tables (host/model/unicode_data.cpp)
struct CategoryRange {
  uint32_t start;  // first code point of a run of equal flags; the run ends at the next start
  uint8_t flags;
};
extern const CategoryRange kCategoryRanges[];
extern const size_t kCategoryRangeCount;
extern const uint32_t kWhitespace[];
extern const size_t kWhitespaceCount;
}  // namespace detail

}  // namespace snapvk::unicode
