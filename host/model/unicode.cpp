#include "host/model/unicode.h"

#include <algorithm>
#include <array>

namespace snapvk::unicode {

uint8_t category(uint32_t cp) {
  using detail::kCategoryRangeCount;
  using detail::kCategoryRanges;
  if (cp >= 0x110000) return kUndefined;
  // The last range whose start is <= cp.
  const auto* end = kCategoryRanges + kCategoryRangeCount;
  const auto* it = std::upper_bound(kCategoryRanges, end, cp,
                                    [](uint32_t v, const detail::CategoryRange& r) { return v < r.start; });
  return (it - 1)->flags;
}

bool is_whitespace(uint32_t cp) {
  const uint32_t* end = detail::kWhitespace + detail::kWhitespaceCount;
  return std::binary_search(detail::kWhitespace, end, cp);
}

size_t utf8_len(char lead) {
  static constexpr size_t kLookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLookup[static_cast<uint8_t>(lead) >> 4];
}

size_t utf8_valid_len(std::string_view s, size_t i) {
  const auto c = static_cast<uint8_t>(s[i]);
  const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
  for (size_t k = 1; k < n; ++k) {
    const auto d = static_cast<uint8_t>(s[i + k]);
    if ((d >> 6) != 2) return 0;
    cp = cp << 6 | (d & 0x3F);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

namespace {

bool is_continuation(std::string_view s, size_t i) {
  return i < s.size() && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80;
}

// One code point at `offset`, advancing it; false (offset untouched) for an invalid sequence.
// Same acceptance rules as llama.cpp's unicode_cpt_from_utf8: lead byte and continuation
// bytes are checked, overlong forms and surrogates are not.
bool decode_one(std::string_view s, size_t& offset, uint32_t& cp) {
  const uint8_t b0 = static_cast<uint8_t>(s[offset]);
  if (!(b0 & 0x80)) {
    cp = b0;
    offset += 1;
    return true;
  }
  if (!(b0 & 0x40)) return false;  // stray continuation byte
  if (!(b0 & 0x20)) {
    if (!is_continuation(s, offset + 1)) return false;
    cp = ((b0 & 0x1Fu) << 6) | (static_cast<uint8_t>(s[offset + 1]) & 0x3Fu);
    offset += 2;
    return true;
  }
  if (!(b0 & 0x10)) {
    if (!is_continuation(s, offset + 1) || !is_continuation(s, offset + 2)) return false;
    cp = ((b0 & 0x0Fu) << 12) | ((static_cast<uint8_t>(s[offset + 1]) & 0x3Fu) << 6) |
         (static_cast<uint8_t>(s[offset + 2]) & 0x3Fu);
    offset += 3;
    return true;
  }
  if (!(b0 & 0x08)) {
    if (!is_continuation(s, offset + 1) || !is_continuation(s, offset + 2) || !is_continuation(s, offset + 3)) {
      return false;
    }
    cp = ((b0 & 0x07u) << 18) | ((static_cast<uint8_t>(s[offset + 1]) & 0x3Fu) << 12) |
         ((static_cast<uint8_t>(s[offset + 2]) & 0x3Fu) << 6) | (static_cast<uint8_t>(s[offset + 3]) & 0x3Fu);
    offset += 4;
    return true;
  }
  return false;
}

}  // namespace

std::vector<uint32_t> decode_utf8(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  size_t offset = 0;
  while (offset < text.size()) {
    uint32_t cp = 0;
    if (decode_one(text, offset, cp)) {
      out.push_back(cp);
    } else {
      out.push_back(0xFFFD);
      ++offset;
    }
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  // llama.cpp throws for code points past U+10FFFF (a 4-byte lead of F4..F7 can decode to
  // one); writing U+FFFD instead keeps bad input from ever failing.
  if (cp > 0x10FFFF) cp = 0xFFFD;
  if (cp <= 0x7F) {
    out.push_back(static_cast<char>(cp));
  } else if (cp <= 0x7FF) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp <= 0xFFFF) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode_utf8(uint32_t cp) {
  std::string s;
  append_utf8(s, cp);
  return s;
}

namespace {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68
// bytes to U+0100..U+0143, in byte order.
struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 0x144> to_byte;  // by code point; -1 where none

  ByteMap() {
    to_byte.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : next++;
      to_unicode[b] = encode_utf8(cp);
      to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

const std::string& byte_to_unicode(uint8_t byte) { return byte_map().to_unicode[byte]; }

int unicode_to_byte(uint32_t cp) { return cp < 0x144 ? byte_map().to_byte[cp] : -1; }

}  // namespace snapvk::unicode
