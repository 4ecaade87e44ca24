#pragma once
// A small JSON writer for machine-readable output (--json, profile reports): values are
// appended in order; strings are escaped; non-finite numbers become null.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "host/model/unicode.h"

namespace snapvk {

class Json {
 public:
  Json& begin_object() { sep(); out_ += '{'; first_.push_back(true); return *this; }
  Json& end_object() { out_ += '}'; first_.pop_back(); return *this; }
  Json& begin_array() { sep(); out_ += '['; first_.push_back(true); return *this; }
  Json& end_array() { out_ += ']'; first_.pop_back(); return *this; }
  Json& key(std::string_view k) {
    sep();
    str(k);
    out_ += ':';
    after_key_ = true;
    return *this;
  }
  Json& value(std::string_view s) { sep(); str(s); return *this; }
  Json& value(const char* s) { return value(std::string_view(s)); }
  Json& value(bool b) { sep(); out_ += b ? "true" : "false"; return *this; }
  Json& value(double d) {
    sep();
    if (!std::isfinite(d)) { out_ += "null"; return *this; }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", d);
    out_ += buf;
    return *this;
  }
  Json& value(int64_t v) { sep(); out_ += std::to_string(v); return *this; }
  Json& value(uint64_t v) { sep(); out_ += std::to_string(v); return *this; }
  Json& value(int32_t v) { return value(int64_t(v)); }
  Json& value(uint32_t v) { return value(uint64_t(v)); }
  template <class T>
  Json& array(const std::vector<T>& v) {
    begin_array();
    for (const auto& x : v) value(x);
    return end_array();
  }
  template <class T>
  Json& field(std::string_view k, const T& v) { key(k); return value(v); }
  const std::string& str() const { return out_; }

 private:
  void sep() {
    if (after_key_) { after_key_ = false; return; }
    if (!first_.empty()) {
      if (!first_.back()) out_ += ',';
      first_.back() = false;
    }
  }
  // Escaped and valid UTF-8: a byte that does not start a valid sequence (a token may end
  // inside a character) becomes U+FFFD, as decoders show it.
  void str(std::string_view s) {
    out_ += '"';
    for (size_t i = 0; i < s.size(); ++i) {
      const unsigned char c = s[i];
      if (c >= 0x80) {
        const size_t n = unicode::utf8_valid_len(s, i);
        if (n == 0) {
          out_ += "\xEF\xBF\xBD";
        } else {
          out_.append(s.substr(i, n));
          i += n - 1;
        }
        continue;
      }
      switch (c) {
        case '"': out_ += "\\\""; break;
        case '\\': out_ += "\\\\"; break;
        case '\n': out_ += "\\n"; break;
        case '\r': out_ += "\\r"; break;
        case '\t': out_ += "\\t"; break;
        default:
          if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out_ += buf;
          } else {
            out_ += char(c);
          }
      }
    }
    out_ += '"';
  }
  std::string out_;
  std::vector<bool> first_;
  bool after_key_ = false;
};

}  // namespace snapvk
